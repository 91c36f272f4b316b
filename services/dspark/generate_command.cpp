// `dspark generate`: loads a model, runs one prompt on the chosen backend (--device) and streams
// the text.
//
// Text goes to stdout as it is produced; the speeds go to stderr afterwards. With --json,
// stdout gets exactly one JSON object instead (text, token_ids, prompt_token_ids, finish_reason,
// stats).
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "services/dspark/backend_factory.h"
#include "services/dspark/cli_args.h"
#include "services/dspark/commands.h"
#include "services/dspark/spec_cli.h"

namespace dspark::cli {

namespace {

const std::vector<option_spec>& generate_options() {
  static const std::vector<option_spec> k_specs = [] {
    std::vector<option_spec> s = {
      {"model", true, false, "PATH  .gguf file or Hugging Face folder (required)"},
      {"prompt", true, false, "TEXT  the prompt (required)"},
      {"chat", false, false, "wrap the prompt as a user turn with the model's chat template"},
      {"system", true, false, "TEXT  system message for --chat (default: the template's)"},
      {"max-tokens", true, false, "N  tokens to generate at most (default 256)"},
      {"temperature", true, false, "T  0 = greedy (default 0)"},
      {"top-k", true, false, "K  keep the K most probable tokens (0 = off)"},
      {"top-p", true, false, "P  nucleus sampling mass in (0, 1] (1 = off)"},
      {"min-p", true, false, "P  drop tokens below P x the top probability (0 = off)"},
      {"seed", true, false, "S  sampling seed (default 0)"},
      {"stop", true, true, "S  stop string, not printed; repeatable"},
      {"ignore-eos", false, false, "generate through end-of-sequence tokens, up to --max-tokens"},
      {"threads", true, false, "N  CPU threads (default: hardware cores)"},
      {"ctx", true, false, "N  context length (default: the model's, at most 8192)"},
      {"precision", true, false, "q8|f32  activation precision of quantized matmuls (default q8)"},
      device_option_spec(),  // --device cpu|cuda (backend_factory.h)
      {"json", false, false, "print one JSON object instead of streaming text"},
      {"help", false, false, "this message"},
    };
    for (auto& o : spec_option_specs()) s.push_back(o);  // --draft, --gamma, ... (spec_cli.h)
    return s;
  }();
  return k_specs;
}

void print_help(std::FILE* out) {
  std::fprintf(out, "usage: dspark generate --model PATH --prompt TEXT [options]\n\noptions:\n%s",
               format_options(generate_options()).c_str());
}

sampling_params read_sampling(const parsed_args& a) {
  sampling_params p;
  p.max_tokens = static_cast<int32_t>(a.get_int("max-tokens", 256, 1, 1 << 20));
  p.temperature = static_cast<float>(a.get_double("temperature", 0.0));
  p.top_k = static_cast<int32_t>(a.get_int("top-k", 0, 0, 1 << 30));
  p.top_p = static_cast<float>(a.get_double("top-p", 1.0));
  p.min_p = static_cast<float>(a.get_double("min-p", 0.0));
  p.seed = a.get_u64("seed", 0);
  p.stop = a.all("stop");
  p.ignore_eos = a.has("ignore-eos");
  validate(p);  // invalid_argument_error names the field and its range
  return p;
}

std::vector<int32_t> encode_prompt(const model& m, const parsed_args& a) {
  const tokenizer& tok = m.tokenizer();
  const std::string prompt = a.require("prompt");
  if (!a.has("chat")) return tok.encode(prompt, /*parse_special=*/true, /*add_special=*/true);
  chat_template tmpl(tok.chat_template());
  std::vector<chat_message> msgs;
  if (auto sys = a.get("system")) msgs.push_back({"system", *sys});
  msgs.push_back({"user", prompt});
  // The rendered template carries its own BOS when the model wants one.
  return tok.encode(tmpl.apply(msgs, /*add_generation_prompt=*/true), true, false);
}

nlohmann::json to_json(const generation_result& r, const std::vector<int32_t>& prompt_ids) {
  return {
      {"text", r.text},
      {"token_ids", r.token_ids},
      {"prompt_token_ids", prompt_ids},
      {"finish_reason", std::string(finish_reason_name(r.finish))},
      {"stats",
       {{"prompt_tokens", r.stats.prompt_tokens},
        {"generated_tokens", r.stats.generated_tokens},
        {"prefill_tok_s", r.stats.prefill_tok_s},
        {"decode_tok_s", r.stats.decode_tok_s},
        {"ttft_s", r.stats.ttft_s}}},
  };
}

int run_generate(const parsed_args& a) {
  const std::string path = a.require("model");
  a.require("prompt");
  const sampling_params params = read_sampling(a);
  cpu_backend_options opt;
  opt.n_threads = static_cast<int>(a.get_int("threads", 0, 1, 256));
  const std::string precision = a.get("precision").value_or("q8");
  if (precision != "q8" && precision != "f32")
    throw usage_error("--precision must be q8 or f32, got '" + precision + "'");
  opt.precision = precision == "f32" ? matmul_precision::f32_activations
                                     : matmul_precision::q8_activations;
  const int64_t ctx_arg = a.get_int("ctx", 0, 16, 1 << 20);
  const bool json = a.has("json");
  backend_choice bc;
  bc.device = read_device(a, "generate");

  const model m = load_model(path);
  opt.n_ctx = static_cast<int32_t>(ctx_arg > 0 ? ctx_arg : std::min<int64_t>(m.config().n_ctx_train, 8192));
  const std::vector<int32_t> prompt_ids = encode_prompt(m, a);
  bc.cpu = opt;
  const std::unique_ptr<backend> be = make_backend(bc, m.config(), m.weights());

  token_callback stream;
  if (!json)
    stream = [](int32_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  // --draft other than none: the speculative decoder (same output rules; spec_cli.h).
  spec_setup spec = make_spec_setup(a, m, bc, 1, be.get());
  std::optional<spec_result> sr;
  if (spec.d) sr = run_spec_generate(m, *be, spec, prompt_ids, params, stream);
  const generation_result r = sr ? sr->gen : generate(m, *be, prompt_ids, params, stream);
  if (json) {
    nlohmann::json j = to_json(r, prompt_ids);
    if (sr) j["stats"].update(spec_stats_json(sr->metrics));
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);  // the text ends before the speeds on a shared terminal
    std::fprintf(stderr,
                 "prompt: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s | ttft %.0f ms | "
                 "%s | finish: %s\n",
                 r.stats.prompt_tokens, r.stats.prefill_tok_s, r.stats.generated_tokens,
                 r.stats.decode_tok_s, r.stats.ttft_s * 1e3, describe(bc).c_str(),
                 std::string(finish_reason_name(r.finish)).c_str());
  }
  return 0;
}

}  // namespace

int generate_command(std::span<const std::string> args) {
  try {
    const parsed_args a = parse_args(args, generate_options());
    if (a.has("help")) {
      print_help(stdout);
      return 0;
    }
    return run_generate(a);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "dspark generate: %s\n\n", e.what());
    print_help(stderr);
    return 2;
  } catch (const invalid_argument_error& e) {
    std::fprintf(stderr, "dspark generate: invalid argument: %s\n", e.what());
    return 2;
  } catch (const format_error& e) {
    std::fprintf(stderr, "dspark generate: cannot load the model: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dspark generate: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace dspark::cli
