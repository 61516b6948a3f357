/* lsvd offload ABI, v1. A program is `__u64 f(struct lsvd_ctx *ctx)` compiled with
 * `clang -O2 -target bpf -c` into one ELF section named by the client. No helpers, no maps,
 * no globals; local (static, noinline) functions must live in the same section.
 *
 * Per hop the executor reads one 4 KiB block at ctx->cur_lba and runs the function.
 * The function sets ctx->done = 1 to finish (r0 and scratch go back to the client), or
 * ctx->n_next = 1 and ctx->next_lba[0] = the next block's LBA to continue.
 * Arguments (up to 4096 bytes) are copied into zeroed scratch before hop 0; scratch is kept
 * across hops. Only done, n_next and next_lba are writable in the context. */
#ifndef LSVD_OFFLOAD_H
#define LSVD_OFFLOAD_H

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define LSVD_BLOCK_SIZE 4096
#define LSVD_SCRATCH_SIZE 4096
#define LSVD_MAX_NEXT 16

struct lsvd_ctx {
	const __u8 *data;   /* the current block, LSVD_BLOCK_SIZE bytes, read-only */
	__u8 *scratch;      /* LSVD_SCRATCH_SIZE bytes, read-write, kept across hops */
	__u64 cur_lba;      /* LBA of data */
	__u32 hop;          /* 0 for the client's start block */
	__u32 done;         /* writable: non-zero ends the chain */
	__u32 n_next;       /* writable: must be 1 when not done (v1) */
	__u32 pad;
	__u64 next_lba[LSVD_MAX_NEXT]; /* writable: next_lba[0] is the next block */
};

_Static_assert(sizeof(struct lsvd_ctx) == 168, "lsvd_ctx is 168 bytes");

#define LSVD_SEC(name) __attribute__((section(name), used))
#define LSVD_LOCAL static __attribute__((noinline))

/* Example B+-tree (examples/bpf/btree_lookup.c, src/btree.rs). */
#define LSVD_BT_FANOUT 254
#define LSVD_BT_INTERNAL 1
#define LSVD_BT_LEAF 2

struct lsvd_bt_node {
	__u64 kind;                  /* LSVD_BT_INTERNAL or LSVD_BT_LEAF */
	__u64 nkeys;                 /* <= LSVD_BT_FANOUT */
	__u64 keys[LSVD_BT_FANOUT];  /* ascending; internal: smallest key under child i */
	__u64 vals[LSVD_BT_FANOUT];  /* internal: child LBA; leaf: value */
};

_Static_assert(sizeof(struct lsvd_bt_node) <= LSVD_BLOCK_SIZE, "node fits a block");

struct lsvd_bt_args {
	__u64 key;    /* in */
	__u64 found;  /* out: 1 if found */
	__u64 value;  /* out */
};

#endif
