/* Sums the values of a chain of blocks: { u64 next; u64 n; u64 vals[510]; }, next == 0
 * ends the chain. Scratch: { u64 sum; u64 blocks; }. Returns the sum. */
#include "lsvd_offload.h"

#define SUM_MAX 510

struct sum_block {
	__u64 next;
	__u64 n;
	__u64 vals[SUM_MAX];
};

struct sum_state {
	__u64 sum;
	__u64 blocks;
};

LSVD_SEC("offload")
__u64 chain_sum(struct lsvd_ctx *ctx)
{
	const struct sum_block *b = (const void *)ctx->data;
	struct sum_state *s = (void *)ctx->scratch;
	__u64 n = b->n;
	__u64 sum = s->sum;

	if (n > SUM_MAX)
		n = SUM_MAX;
	for (__u32 i = 0; i < SUM_MAX; i++) {
		if (i >= n)
			break;
		sum += b->vals[i];
	}
	s->sum = sum;
	s->blocks += 1;
	if (b->next == 0) {
		ctx->done = 1;
		return sum;
	}
	ctx->next_lba[0] = b->next;
	ctx->n_next = 1;
	return 0;
}
