/* bpf-to-bpf calls in one section: r0 = f(cur_lba) + g(hop) with a stack buffer in each
 * frame. Used to check calls and per-frame stack usage. */
#include "lsvd_offload.h"

LSVD_LOCAL LSVD_SEC("offload") __u64 mix(__u64 x, const __u8 *d)
{
	volatile __u64 buf[4];
	for (int i = 0; i < 4; i++)
		buf[i] = x * (i + 1) + d[i];
	return buf[0] + buf[1] + buf[2] + buf[3];
}

LSVD_SEC("offload")
__u64 local_calls(struct lsvd_ctx *ctx)
{
	volatile __u64 keep[2];
	keep[0] = mix(ctx->cur_lba, ctx->data);
	keep[1] = mix(ctx->hop, ctx->data + 8);
	ctx->done = 1;
	return keep[0] ^ keep[1];
}
