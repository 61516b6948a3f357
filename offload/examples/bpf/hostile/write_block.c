#include "lsvd_offload.h"
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	((__u8 *)ctx->data)[0] = 1;
	ctx->done = 1;
	return 0;
}
