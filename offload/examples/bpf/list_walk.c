/* Linked-list search: each block starts with struct list_node; next == 0 ends the list.
 * Args in scratch: { u64 key; u64 found; u64 value; }. Returns found. */
#include "lsvd_offload.h"

struct list_node {
	__u64 key;
	__u64 value;
	__u64 next;
};

struct list_args {
	__u64 key;
	__u64 found;
	__u64 value;
};

LSVD_SEC("offload")
__u64 list_walk(struct lsvd_ctx *ctx)
{
	const struct list_node *n = (const void *)ctx->data;
	struct list_args *a = (void *)ctx->scratch;

	if (n->key == a->key) {
		a->found = 1;
		a->value = n->value;
		ctx->done = 1;
		return 1;
	}
	if (n->next == 0) {
		ctx->done = 1;
		return 0;
	}
	ctx->next_lba[0] = n->next;
	ctx->n_next = 1;
	return 0;
}
