// The backend interface's defaults: backends without prefix forwards refuse them; backends
// without a prefix cache attach nothing and publish nothing.
#include "engine/backend.h"

#include "common/error.h"

namespace dspark {

forward_output backend::forward_prefix(const forward_batch&, int32_t) {
  throw invalid_argument_error("forward_prefix: this backend cannot run a layer prefix (supports_forward_prefix() is false)");
}

int32_t backend::attach_prefix(int32_t, std::span<const int32_t>) { return 0; }

void backend::cache_prefix(int32_t, std::span<const int32_t>) {}

}  // namespace dspark
