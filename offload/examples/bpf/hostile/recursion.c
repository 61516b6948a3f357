#include "lsvd_offload.h"
LSVD_LOCAL LSVD_SEC("offload") __u64 walk(const __u8 *d, __u64 i)
{
	if (i >= 64 || d[i] == 0)
		return 1;
	return walk(d, d[i] & 63) * 2 + walk(d, (d[i] >> 1) & 63);
}
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	ctx->done = 1;
	return walk(ctx->data, 0);
}
