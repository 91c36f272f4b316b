// Stop-string detection over streamed text, for stop strings that span tokens.
//
// Text is pushed as it is decoded. The matcher emits all of it except a trailing part that
// could still grow into a stop string, which it holds back. Held-back text is never part of an
// earlier, missed match: the longest suffix that is a prefix of any stop string is kept, so a
// match starting in emitted text is impossible.
//
// Example, stop = {"\n\nUser"}: push("Hi.\n") -> emits "Hi.", holds "\n";
//   push("\nUs") -> emits "", holds "\n\nUs";  push("er: x") -> stopped, emits "" (the text
//   before the match was already out), everything from the match on is dropped.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dspark {

class stop_string_matcher {
 public:
  explicit stop_string_matcher(std::vector<std::string> stops);

  struct step {
    std::string emit;      // text that is now final
    bool stopped = false;  // a stop string completed; nothing after it is emitted
  };
  // Adds decoded text. After a stop, further pushes emit nothing.
  step push(std::string_view text);
  // The held-back text, at the end of generation without a stop.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace dspark
