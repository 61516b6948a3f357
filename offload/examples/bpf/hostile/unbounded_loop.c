#include "lsvd_offload.h"
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	__u64 x = *(const __u64 *)ctx->data;
	for (;;) {
		if (x == 7)
			break;
		x = x * 3 + 1;
	}
	ctx->done = 1;
	return x;
}
