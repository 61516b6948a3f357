//! The RADOS store against a real cluster: the SegmentStore contract, object
//! naming, image isolation, `destroy`, `list_images`, and the error answers
//! for a missing pool, a missing image and an unreachable cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use log_engine::store::SegmentStore;
use log_engine::{CreateOptions, Error, Image, OpenOptions};
use lsvd_rados::{list_images, open_spec, ImageLocation, RadosOptions, RadosStore};

fn seg(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn segments_and_meta_round_trip() {
    let Some(conf) = cluster("segments_and_meta_round_trip") else {
        return;
    };
    let name = unique("rt");
    let s = RadosStore::create(Some(&conf), &pool(), "", &name).unwrap();
    let a = seg(1, 3 * 4096);
    s.write_segment(5, &a).unwrap();
    s.write_segment(7, &seg(2, 4096)).unwrap();
    // Never overwritten.
    assert!(matches!(
        s.write_segment(5, &seg(9, 4096)),
        Err(Error::Exists(_))
    ));
    let mut buf = vec![0u8; 4096];
    s.read_segment(5, 4096, &mut buf).unwrap();
    assert_eq!(buf, a[4096..8192]);
    // Past the end: an error, not a short read.
    let mut big = vec![0u8; 8192];
    let e = s.read_segment(5, 8192, &mut big).unwrap_err();
    assert!(e.to_string().contains(".0000000000000005"), "{e}");
    // Missing segment: NotFound naming the object.
    match s.read_segment(6, 0, &mut buf) {
        Err(Error::NotFound(m)) => assert!(m.contains(&format!("{name}.0000000000000006")), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let l = s.list_segments().unwrap();
    assert_eq!(
        l.iter().map(|e| (e.seq, e.len)).collect::<Vec<_>>(),
        vec![(5, 3 * 4096), (7, 4096)]
    );
    s.delete_segment(7).unwrap();
    s.delete_segment(7).unwrap(); // absent: not an error
    assert_eq!(s.list_segments().unwrap().len(), 1);

    assert_eq!(s.get_meta("ckpt.1").unwrap(), None);
    s.put_meta("ckpt.1", b"one").unwrap();
    s.put_meta("ckpt.1", b"two!").unwrap(); // replace
    s.put_meta("superblock", b"sb").unwrap();
    let big_meta = seg(3, (1 << 20) + 17); // bigger than the first read buffer
    s.put_meta("part.0", &big_meta).unwrap();
    assert_eq!(s.get_meta("ckpt.1").unwrap().as_deref(), Some(&b"two!"[..]));
    assert_eq!(s.get_meta("part.0").unwrap(), Some(big_meta));
    assert_eq!(
        s.list_meta().unwrap(),
        vec!["ckpt.1", "part.0", "superblock"]
    );
    // Object names as documented in README.md.
    let objs = rados_ls(&conf, &pool(), "");
    for o in [
        name.clone(),
        format!("{name}.0000000000000005"),
        format!("{name}.meta.ckpt.1"),
        format!("{name}.meta.part.0"),
    ] {
        assert!(objs.contains(&o), "{o} not in rados ls");
    }
    s.delete_meta("ckpt.1").unwrap();
    s.delete_meta("ckpt.1").unwrap();
    assert!(matches!(
        s.put_meta("../x", b""),
        Err(Error::InvalidArgument(_))
    ));
    s.destroy().unwrap();
    assert!(rados_ls(&conf, &pool(), "")
        .iter()
        .all(|o| !o.starts_with(&name)));
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn two_images_do_not_see_each_other_and_rm_removes_only_its_own() {
    let Some(conf) = cluster("two_images") else {
        return;
    };
    let p = pool();
    let ns = unique("ns");
    let a = unique("img");
    // `b` extends `a`'s name: prefix listing must not mix them up.
    let b = format!("{a}0");
    rados_put(&conf, &p, &ns, &format!("{a}x.foreign"));
    rados_put(&conf, &p, &ns, "foreign");
    for (n, blocks) in [(&a, 64u64), (&b, 32)] {
        let st = lsvd_rados::create_spec(&format!("rados:{p}/{ns}/{n}?conf={conf}")).unwrap();
        Image::create(
            st.clone(),
            &CreateOptions {
                size: blocks * 4096,
                segment_size: 64 << 10,
                compression: log_engine::Compression::None,
            },
        )
        .unwrap();
        let img = Image::open(st, OpenOptions::default()).unwrap();
        for i in 0..blocks {
            img.write(i * 4096, &lsvd_tests::block(1, i)).unwrap();
        }
        img.flush().unwrap();
        img.checkpoint().unwrap();
        img.close().unwrap();
    }
    let sa = RadosStore::open(Some(&conf), &p, &ns, &a).unwrap();
    let sb = RadosStore::open(Some(&conf), &p, &ns, &b).unwrap();
    let oa = sa.image_objects().unwrap();
    let ob = sb.image_objects().unwrap();
    assert!(!oa.is_empty() && !ob.is_empty());
    assert!(
        oa.iter()
            .all(|o| o == &a || o.starts_with(&format!("{a}."))),
        "{oa:?}"
    );
    assert!(
        ob.iter()
            .all(|o| o == &b || o.starts_with(&format!("{b}."))),
        "{ob:?}"
    );
    // The same image name in another namespace is another image.
    assert!(matches!(
        RadosStore::open(Some(&conf), &p, "", &a),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        list_images(Some(&conf), &p, &ns).unwrap(),
        vec![a.clone(), b.clone()]
    );

    let before = rados_ls(&conf, &p, &ns);
    sa.destroy().unwrap();
    let after = rados_ls(&conf, &p, &ns);
    let expect: Vec<String> = before.into_iter().filter(|o| !oa.contains(o)).collect();
    assert_eq!(after, expect, "rm removed exactly the image's objects");
    assert!(after.contains(&format!("{a}x.foreign")) && after.contains(&"foreign".to_string()));
    // b is intact.
    let img = Image::open(
        open_spec(&format!("rados:{p}/{ns}/{b}?conf={conf}")).unwrap(),
        OpenOptions::default(),
    )
    .unwrap();
    let got = lsvd_tests::read_all(&img, 32);
    assert!(got.iter().all(|t| *t == Some(1)));
    img.close().unwrap();
    assert_eq!(list_images(Some(&conf), &p, &ns).unwrap(), vec![b.clone()]);
    sb.destroy().unwrap();
    // Creating over leftovers is refused.
    rados_put(&conf, &p, &ns, &format!("{b}.meta.stale"));
    assert!(matches!(
        RadosStore::create(Some(&conf), &p, &ns, &b),
        Err(Error::Exists(_))
    ));
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn missing_pool_and_image_are_named() {
    let Some(conf) = cluster("missing_pool_and_image") else {
        return;
    };
    match RadosStore::open(Some(&conf), "no-such-pool", "", "x") {
        Err(Error::NotFound(m)) => assert!(m.contains("no-such-pool"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match RadosStore::open(Some(&conf), &pool(), "", "no-such-image") {
        Err(Error::NotFound(m)) => assert!(m.contains("no-such-image"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// A cluster nobody answers for: a clear error within the mount timeout
/// plus the retry budget, never a hang.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn unreachable_cluster_fails_in_bounded_time() {
    let Some(_conf) = cluster("unreachable_cluster") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    std::fs::write(
        &conf,
        "[global]\nmon host = v2:127.0.0.1:9\nauth client required = none\n\
         auth cluster required = none\nauth service required = none\n\
         [client]\nlog file = /dev/null\nadmin socket =\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let r = RadosStore::open_at(
        ImageLocation {
            conf_path: Some(conf.to_str().unwrap().to_string()),
            pool: "test".into(),
            namespace: String::new(),
            name: "x".into(),
        },
        RadosOptions {
            op_timeout_secs: 2,
            retry_budget: Duration::from_secs(3),
            ..RadosOptions::default()
        },
    );
    let took = t0.elapsed();
    match r {
        Err(Error::Timeout(m)) => assert!(m.contains("connect"), "{m}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(20), "took {took:?}");
    eprintln!("unreachable cluster: error after {took:?}");
}
