#include "lsvd_offload.h"
struct { int type; int max_entries; } my_map __attribute__((section(".maps"), used));
LSVD_SEC("offload") __u64 f(struct lsvd_ctx *ctx)
{
	ctx->done = 1;
	return (__u64)&my_map;
}
