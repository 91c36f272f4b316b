// Option parsing for the dspark subcommands.
#include "services/dspark/cli_args.h"

#include "common/error.h"

#include <cerrno>
#include <exception>
#include <cmath>
#include <cstdlib>

namespace dspark::cli {

namespace {

const option_spec* find_spec(const std::vector<option_spec>& specs, const std::string& name) {
  for (const auto& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace

std::optional<std::string> parsed_args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

const std::vector<std::string>& parsed_args::all(const std::string& name) const {
  static const std::vector<std::string> k_empty;
  auto it = values_.find(name);
  return it == values_.end() ? k_empty : it->second;
}

std::string parsed_args::require(const std::string& name) const {
  auto v = get(name);
  if (!v) throw usage_error("missing required option --" + name);
  return *v;
}

int64_t parsed_args::get_int(const std::string& name, int64_t fallback, int64_t lo,
                             int64_t hi) const {
  auto v = get(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE || x < lo || x > hi)
    throw usage_error("--" + name + " must be an integer in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "], got '" + *v + "'");
  return x;
}

uint64_t parsed_args::get_u64(const std::string& name, uint64_t fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v->c_str(), &end, 10);
  if (v->empty() || (*v)[0] == '-' || *end != '\0' || errno == ERANGE)
    throw usage_error("--" + name + " must be an unsigned 64-bit integer, got '" + *v + "'");
  return x;
}

double parsed_args::get_double(const std::string& name, double fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || !std::isfinite(x))
    throw usage_error("--" + name + " must be a number, got '" + *v + "'");
  return x;
}

parsed_args parse_args(std::span<const std::string> args, const std::vector<option_spec>& specs) {
  parsed_args out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.size() == 2)
      throw usage_error("unexpected argument '" + a + "' (options start with --)");
    std::string name = a.substr(2);
    std::optional<std::string> value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const option_spec* spec = find_spec(specs, name);
    if (!spec) throw usage_error("unknown option --" + name);
    if (!spec->takes_value) {
      if (value) throw usage_error("option --" + name + " takes no value");
      value = "";
    } else if (!value) {
      if (i + 1 >= args.size()) throw usage_error("option --" + name + " needs a value");
      value = args[++i];
    }
    auto& slot = out.values_[name];
    if (!slot.empty() && !spec->repeatable)
      throw usage_error("option --" + name + " given more than once");
    slot.push_back(*value);
  }
  return out;
}

std::string format_options(const std::vector<option_spec>& specs) {
  std::string out;
  for (const auto& s : specs) {
    std::string left = "  --" + s.name;
    out += left;
    out += left.size() < 24 ? std::string(24 - left.size(), ' ') : std::string("\n") + std::string(24, ' ');
    out += s.help + "\n";
  }
  return out;
}

int run_subcommand(const char* name, std::span<const std::string> args, const std::vector<option_spec>& specs,
                   void (*help)(std::FILE*), const std::function<int(const parsed_args&)>& body) {
  try {
    const parsed_args a = parse_args(args, specs);
    if (a.has("help")) {
      help(stdout);
      return 0;
    }
    return body(a);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "dspark %s: %s\n\n", name, e.what());
    help(stderr);
    return 2;
  } catch (const invalid_argument_error& e) {
    std::fprintf(stderr, "dspark %s: invalid argument: %s\n", name, e.what());
    return 2;
  } catch (const format_error& e) {
    std::fprintf(stderr, "dspark %s: cannot load: %s\n", name, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dspark %s: error: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace dspark::cli
