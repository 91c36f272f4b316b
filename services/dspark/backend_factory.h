// Where `dspark` chooses its execution backend: the --device option and the one function that
// builds a backend for the choice, used for the target and for draft backends (the layer-skip
// drafter's truncated model) alike, so every command decides the same way.
//
//   --device cpu|cuda   default: cuda when this binary was built with CUDA (DSPARK_HAVE_CUDA)
//                       and a device is present, else cpu
//
// --threads and --precision only mean something on the CPU; with cuda they are ignored (a note
// says so). n_seq_max and n_ctx apply to both.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "engine/backend.h"
#include "engine/cpu_backend.h"
#include "services/dspark/cli_args.h"

namespace dspark {
struct model_config;
struct llama_weights;
}  // namespace dspark

namespace dspark::cli {

enum class device_kind { cpu, cuda };

struct backend_choice {
  device_kind device = device_kind::cpu;
  // For cpu everything here; for cuda only n_seq_max and n_ctx (0 = the backend's default).
  cpu_backend_options cpu;
  // cuda: share of the device memory left after weights and buffers that the KV pool takes.
  // Half, not the backend's 0.9, so a draft backend (built second) still finds room.
  double kv_memory_fraction = 0.5;
};

// The --device row for a subcommand's option table.
option_spec device_option_spec();

// True when this binary has the CUDA backend and cudaGetDeviceCount() finds a device. Never throws.
bool cuda_available();

// The device --device names, or the default above. usage_error for an unknown name;
// std::runtime_error (exit 1) when cuda is asked for but the binary or the machine lacks it.
// With cuda, prints a note to stderr (prefixed by `command`) for a given --threads/--precision.
// Call it before loading the model, so a bad device fails fast.
device_kind read_device(const parsed_args& a, std::string_view command);

// A backend for the choice over (c, w). cpu_backend needs c and w to outlive it; cuda_backend
// copies the weights to the device. Throws what the backend's constructor throws.
std::unique_ptr<backend> make_backend(const backend_choice& ch, const model_config& c, const llama_weights& w);

// CPU threads the choice uses (--threads or the default); 0 for cuda.
int cpu_threads(const backend_choice& ch);

// "cpu, 4 threads, q8" or "cuda", for status lines.
std::string describe(const backend_choice& ch);

// "cpu" or "cuda".
std::string_view device_name(device_kind d);

}  // namespace dspark::cli
