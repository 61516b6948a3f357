#include "lsvd_offload.h"
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	*(__u64 *)ctx->scratch = (__u64)ctx->scratch;
	ctx->done = 1;
	return 0;
}
