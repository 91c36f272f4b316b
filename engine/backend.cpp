// The backend interface's one default: backends without prefix forwards refuse them.
#include "engine/backend.h"

#include "common/error.h"

namespace dspark {

forward_output backend::forward_prefix(const forward_batch&, int32_t) {
  throw invalid_argument_error("forward_prefix: this backend cannot run a layer prefix (supports_forward_prefix() is false)");
}

}  // namespace dspark
