//! Example programs end to end: B+-tree lookups at 1..6 levels, list walk, chain sum,
//! local calls; every engine gives the same r0, scratch and hop count.

mod common;

use common::{accept, load, obj_path};
use lsvd_offload::btree;
use lsvd_offload::chain::MemSource;
use lsvd_offload::{run_chain, ChainLimits, ChainResult, Engine, Program, Vm};

const ENGINES: [Engine; 3] = [Engine::Jit, Engine::RbpfInterp, Engine::Interp];

fn bt_args(key: u64) -> Vec<u8> {
    let mut a = key.to_le_bytes().to_vec();
    a.extend_from_slice(&[0xee; 16]); // found/value get overwritten
    a
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Runs `prog` in all engines and asserts they agree; returns the common result.
fn run_all(prog: &Program, src: &MemSource, start: u64, args: &[u8]) -> ChainResult {
    let mut results = Vec::new();
    for e in ENGINES {
        let mut vm = Vm::new(prog, e).expect("vm");
        let r = run_chain(&mut vm, src, start, args, &ChainLimits::default())
            .unwrap_or_else(|err| panic!("{e:?}: {err}"));
        results.push((vm.engine(), r));
    }
    for (e, r) in &results[1..] {
        assert_eq!(
            r.r0, results[0].1.r0,
            "{e:?} r0 differs from {:?}",
            results[0].0
        );
        assert_eq!(r.hops, results[0].1.hops, "{e:?} hops differ");
        assert_eq!(
            r.scratch[..],
            results[0].1.scratch[..],
            "{e:?} scratch differs"
        );
    }
    results.remove(0).1
}

#[test]
fn jit_is_really_used_for_small_programs() {
    let prog = Program::new(load("btree_lookup.o")).unwrap();
    let vm = Vm::new(&prog, Engine::Jit).unwrap();
    assert_eq!(vm.engine(), Engine::Jit);
}

#[test]
fn btree_lookup_one_to_six_levels() {
    let prog = Program::new(load("btree_lookup.o")).unwrap();
    assert!(prog.verified().insn_bound > 254 && prog.verified().insn_bound < 10_000);
    // fanout 3: 3^(L-1) < n <= 3^L keys give L levels.
    for (levels, n) in [(1u32, 3u64), (2, 7), (3, 20), (4, 60), (5, 200), (6, 500)] {
        let pairs: Vec<(u64, u64)> = (0..n).map(|i| (i * 10 + 5, i * 1000 + 7)).collect();
        let tree = btree::build(&pairs, 3);
        assert_eq!(tree.levels, levels, "{n} keys");
        let src = MemSource {
            blocks: tree.blocks.clone(),
        };
        for key in [
            5,
            15,
            (n - 1) * 10 + 5,
            (n / 2) * 10 + 5,
            0,
            6,
            n * 10 + 100,
        ] {
            let want = btree::lookup(&tree, key);
            let r = run_all(&prog, &src, tree.root, &bt_args(key));
            assert_eq!(r.hops, levels, "key {key}");
            match want {
                Some(v) => {
                    assert_eq!(r.r0, 1, "key {key} should be found");
                    assert_eq!(u64_at(&r.scratch[..], 8), 1);
                    assert_eq!(u64_at(&r.scratch[..], 16), v);
                    assert_eq!(v, (key - 5) / 10 * 1000 + 7);
                }
                None => {
                    assert_eq!(r.r0, 0, "key {key} should be absent");
                    assert_eq!(u64_at(&r.scratch[..], 8), 0);
                }
            }
        }
    }
}

#[test]
fn btree_full_fanout() {
    let prog = Program::new(load("btree_lookup.o")).unwrap();
    let pairs: Vec<(u64, u64)> = (0..254 * 254 + 1).map(|i| (i * 2, i ^ 0xabcd)).collect();
    let tree = btree::build(&pairs, btree::FANOUT);
    assert_eq!(tree.levels, 3);
    let src = MemSource {
        blocks: tree.blocks,
    };
    for key in [0u64, 2, 254 * 2, 254 * 254 * 2, 1000, 1001] {
        let r = run_all(&prog, &src, tree.root, &bt_args(key));
        let want = (key % 2 == 0).then_some((key / 2) ^ 0xabcd);
        assert_eq!(r.r0, want.is_some() as u64, "key {key}");
        if let Some(v) = want {
            assert_eq!(u64_at(&r.scratch[..], 16), v);
        }
    }
}

fn block_with(words: &[u64]) -> [u8; 4096] {
    let mut b = [0u8; 4096];
    for (i, w) in words.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    b
}

#[test]
fn list_walk_finds_and_misses() {
    let prog = Program::new(load("list_walk.o")).unwrap();
    // LBA 0 unused; list 3 -> 1 -> 4 -> 2 (end).
    let mut blocks = vec![[0u8; 4096]; 5];
    blocks[3] = block_with(&[30, 300, 1]);
    blocks[1] = block_with(&[10, 100, 4]);
    blocks[4] = block_with(&[40, 400, 2]);
    blocks[2] = block_with(&[20, 200, 0]);
    let src = MemSource { blocks };
    for (key, found, value, hops) in [
        (30u64, 1u64, 300u64, 1u32),
        (40, 1, 400, 3),
        (20, 1, 200, 4),
        (99, 0, 0, 4),
    ] {
        let r = run_all(&prog, &src, 3, &bt_args(key));
        assert_eq!((r.r0, r.hops), (found, hops), "key {key}");
        if found == 1 {
            assert_eq!(u64_at(&r.scratch[..], 16), value);
        }
    }
}

#[test]
fn chain_sum_sums_all_blocks() {
    let prog = Program::new(load("chain_sum.o")).unwrap();
    let mut blocks = vec![[0u8; 4096]; 4];
    let mut expect = 0u64;
    let layout = [(1usize, 2u64, 510usize), (2, 3, 7), (3, 0, 600)];
    for (lba, next, n) in layout {
        let vals: Vec<u64> = (0..n.min(510) as u64).map(|i| i * 3 + lba as u64).collect();
        expect += vals.iter().sum::<u64>();
        let mut words = vec![next, n as u64];
        words.extend(vals);
        blocks[lba] = block_with(&words);
    }
    let src = MemSource { blocks };
    let r = run_all(&prog, &src, 1, &[]);
    assert_eq!(r.r0, expect);
    assert_eq!(r.hops, 3);
    assert_eq!(u64_at(&r.scratch[..], 0), expect);
    assert_eq!(u64_at(&r.scratch[..], 8), 3);
}

#[test]
fn filter_sum_with_a_branchy_loop_body() {
    let code = load("filter_sum.o");
    let v = accept(&code);
    // Liveness-based pruning keeps this far below the 1,000,000 processed-insn limit.
    assert!(v.processed < 200_000, "processed {}", v.processed);
    let prog = Program::new(code).unwrap();
    let mut blocks = vec![[0u8; 4096]; 3];
    let vals1: Vec<u64> = (0..510).map(|i| (i * 37) % 1000).collect();
    let vals2: Vec<u64> = (0..100).map(|i| 2000 - i).collect();
    let mut w = vec![2u64, 510];
    w.extend(&vals1);
    blocks[1] = block_with(&w);
    let mut w = vec![0u64, 100];
    w.extend(&vals2);
    blocks[2] = block_with(&w);
    let t = 500u64;
    let src = MemSource { blocks };
    let mut args = t.to_le_bytes().to_vec();
    args.extend_from_slice(&[0u8; 16]);
    let r = run_all(&prog, &src, 1, &args);
    let pass: Vec<u64> = vals1
        .iter()
        .chain(&vals2)
        .copied()
        .filter(|v| *v > t)
        .collect();
    assert_eq!(r.r0, pass.iter().sum::<u64>());
    assert_eq!(u64_at(&r.scratch[..], 16), pass.len() as u64);
    assert_eq!(r.hops, 2);
}

#[test]
fn local_calls_agree_across_engines() {
    let code = load("local_calls.o");
    let v = accept(&code);
    assert!(v.has_calls);
    let prog = Program::new(code).unwrap();
    let mut b = [0u8; 4096];
    for (i, x) in b.iter_mut().enumerate().take(64) {
        *x = (i * 7 + 1) as u8;
    }
    let src = MemSource {
        blocks: vec![[0u8; 4096], b],
    };
    let r = run_all(&prog, &src, 1, &[]);
    let mix = |x: u64, d: &[u8]| {
        (0..4)
            .map(|i| x * (i as u64 + 1) + d[i] as u64)
            .sum::<u64>()
    };
    assert_eq!(r.r0, mix(1, &b[..]) ^ mix(0, &b[8..]));
    // Programs with calls do not run in rbpf's JIT (it shares one r10 across frames).
    assert_eq!(
        Vm::new(&prog, Engine::Jit).unwrap().engine(),
        Engine::RbpfInterp
    );
}

#[test]
fn committed_objects_match_a_rebuild_when_clang_exists() {
    let clang = ["clang-14", "clang"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("version 14."))
            .unwrap_or(false)
    });
    let Some(clang) = clang else {
        eprintln!("clang-14 not found: skipping the rebuild comparison");
        return;
    };
    let dir = tempdir();
    let inc = obj_path("../../include");
    let mut checked = 0;
    for sub in ["", "hostile"] {
        let mut srcs: Vec<_> = std::fs::read_dir(obj_path(sub))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "c"))
            .collect();
        srcs.sort();
        for src in srcs {
            let out = dir.join(src.with_extension("o").file_name().unwrap());
            let st = std::process::Command::new(clang)
                .args(["-O2", "-g0", "-target", "bpf", "-I"])
                .arg(&inc)
                .arg("-c")
                .arg(&src)
                .arg("-o")
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success(), "{}", src.display());
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(src.with_extension("o")).unwrap(),
                "{} differs from a rebuild: run examples/build.sh",
                src.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} sources found");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lsvd-offload-rebuild-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Rough per-lookup cost per engine (not a benchmark: run by hand with
/// `cargo test -p lsvd-offload --release --test examples -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure_engines() {
    let prog = Program::new(load("btree_lookup.o")).unwrap();
    let pairs: Vec<(u64, u64)> = (0..254u64 * 254 * 4).map(|i| (i, i + 1)).collect();
    let tree = btree::build(&pairs, btree::FANOUT);
    let src = MemSource {
        blocks: tree.blocks,
    };
    for e in ENGINES {
        let mut vm = Vm::new(&prog, e).unwrap();
        let n = 20_000u64;
        let t = std::time::Instant::now();
        let mut hops = 0;
        for k in 0..n {
            let key = (k * 7919) % (254 * 254 * 4);
            let r = run_chain(
                &mut vm,
                &src,
                tree.root,
                &bt_args(key),
                &ChainLimits::default(),
            )
            .unwrap();
            hops += r.hops as u64;
        }
        let el = t.elapsed();
        println!(
            "{e:?} ({:?}): {} levels, {:.0} ns/lookup, {:.0} ns/hop",
            vm.engine(),
            tree.levels,
            el.as_nanos() as f64 / n as f64,
            el.as_nanos() as f64 / hops as f64
        );
    }
    let t = std::time::Instant::now();
    for _ in 0..20 {
        lsvd_offload::verify(prog.code()).unwrap();
    }
    println!("verify btree_lookup: {:?}", t.elapsed() / 20);
}
