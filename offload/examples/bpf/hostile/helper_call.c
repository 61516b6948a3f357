#include "lsvd_offload.h"
static long (*bpf_ktime)(void) = (void *)5;
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	ctx->done = 1;
	return bpf_ktime();
}
