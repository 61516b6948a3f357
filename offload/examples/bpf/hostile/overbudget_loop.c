#include "lsvd_offload.h"
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	__u64 s = 0;
	for (__u64 i = 0; i < 300000; i++)
		s += ctx->data[i & 4095] ^ i;
	ctx->done = 1;
	return s;
}
