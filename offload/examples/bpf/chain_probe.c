/* Chain probes for the run-time error tests (one function per section).
 * Args in scratch: __u64 a[0] = an LBA or an n_next value. */
#include "lsvd_offload.h"

/* Hop 0 asks for block a[0]; hop 1 finishes and returns its LBA. */
LSVD_SEC("probe_goto_arg")
__u64 goto_arg(struct lsvd_ctx *ctx)
{
	__u64 *a = (void *)ctx->scratch;

	if (ctx->hop == 0) {
		ctx->next_lba[0] = a[0];
		ctx->n_next = 1;
		return 0;
	}
	ctx->done = 1;
	return ctx->cur_lba;
}

/* Follows the current block forever: stopped by the hop limit. */
LSVD_SEC("probe_self_cycle")
__u64 self_cycle(struct lsvd_ctx *ctx)
{
	ctx->next_lba[0] = ctx->cur_lba;
	ctx->n_next = 1;
	return 0;
}

/* Not done, n_next = a[0] (anything but 1 is refused by the executor). */
LSVD_SEC("probe_bad_next")
__u64 bad_next(struct lsvd_ctx *ctx)
{
	__u64 *a = (void *)ctx->scratch;

	ctx->next_lba[0] = ctx->cur_lba;
	ctx->n_next = (__u32)a[0];
	return 0;
}

/* Finishes at once with the first word of the block. */
LSVD_SEC("probe_first_word")
__u64 first_word(struct lsvd_ctx *ctx)
{
	const __u64 *d = (const void *)ctx->data;

	ctx->done = 1;
	return d[0];
}
