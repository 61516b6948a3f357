/* B+-tree point lookup, one node per hop (BPF-KV style, 4 KiB nodes, fanout 254).
 * Args in scratch: struct lsvd_bt_args. Returns found (0/1), 2 on a corrupt node. */
#include "lsvd_offload.h"

LSVD_SEC("offload")
__u64 btree_lookup(struct lsvd_ctx *ctx)
{
	const struct lsvd_bt_node *n = (const void *)ctx->data;
	struct lsvd_bt_args *a = (void *)ctx->scratch;
	__u64 key = a->key;
	__u64 nk = n->nkeys;

	if (nk > LSVD_BT_FANOUT)
		nk = LSVD_BT_FANOUT;
	if (n->kind == LSVD_BT_LEAF) {
		for (__u32 i = 0; i < LSVD_BT_FANOUT; i++) {
			if (i >= nk)
				break;
			if (n->keys[i] == key) {
				a->found = 1;
				a->value = n->vals[i];
				ctx->done = 1;
				return 1;
			}
		}
		a->found = 0;
		ctx->done = 1;
		return 0;
	}
	if (n->kind != LSVD_BT_INTERNAL || nk == 0) {
		ctx->done = 1;
		return 2;
	}
	__u32 c = 0;
	for (__u32 i = 1; i < LSVD_BT_FANOUT; i++) {
		if (i >= nk || key < n->keys[i])
			break;
		c = i;
	}
	ctx->next_lba[0] = n->vals[c];
	ctx->n_next = 1;
	return 0;
}
