/* Chain of value blocks ({ u64 next; u64 n; u64 vals[510]; } like chain_sum) summing only
 * values above a threshold: a loop body with a data-dependent branch that does not exit.
 * Scratch: { u64 threshold; u64 sum; u64 count; }. Returns the sum. */
#include "lsvd_offload.h"

#define SUM_MAX 510

struct sum_block {
	__u64 next;
	__u64 n;
	__u64 vals[SUM_MAX];
};

struct filter_state {
	__u64 threshold;
	__u64 sum;
	__u64 count;
};

LSVD_SEC("offload")
__u64 filter_sum(struct lsvd_ctx *ctx)
{
	const struct sum_block *b = (const void *)ctx->data;
	struct filter_state *s = (void *)ctx->scratch;
	__u64 n = b->n;
	__u64 t = s->threshold;
	__u64 sum = s->sum, count = s->count;

	if (n > SUM_MAX)
		n = SUM_MAX;
	for (__u32 i = 0; i < SUM_MAX; i++) {
		if (i >= n)
			break;
		__u64 v = b->vals[i];
		if (v > t) {
			sum += v;
			count++;
		}
	}
	s->sum = sum;
	s->count = count;
	if (b->next == 0) {
		ctx->done = 1;
		return sum;
	}
	ctx->next_lba[0] = b->next;
	ctx->n_next = 1;
	return 0;
}
