// function_ref: a non-owning, non-allocating reference to a callable.
//
// thread_pool::parallel_for runs on the decode hot path a few hundred times per token. Taking
// a std::function there heap-allocates on every call, because the callers' lambdas capture
// more than std::function's small buffer holds. A function_ref is two words: a pointer to the
// caller's callable and a plain function pointer that knows its type (the "trampoline"). It
// never copies or owns the callable, so it must not outlive it: fine for a parameter that is
// only used during the call, wrong for anything stored.
//
//   void run(function_ref<void(int)> fn) { fn(3); }
//   run([&](int i) { total += i; });   // the lambda lives until the end of the statement
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace dspark {

template <class Signature>
class function_ref;

template <class R, class... Args>
class function_ref<R(Args...)> {
 public:
  // Binds to any callable invocable as R(Args...). Not explicit, so lambdas convert at the
  // call site as they did for std::function.
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, function_ref> &&
             std::is_invocable_r_v<R, F&, Args...>)
  function_ref(F&& f) noexcept  // NOLINT(google-explicit-constructor)
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_(&trampoline<std::remove_reference_t<F>>) {}

  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

 private:
  // Restores the callable's type (const included) and invokes it in place.
  template <class F>
  static R trampoline(void* obj, Args... args) {
    if constexpr (std::is_void_v<R>) {
      (*static_cast<F*>(obj))(std::forward<Args>(args)...);  // drops any result
    } else {
      return (*static_cast<F*>(obj))(std::forward<Args>(args)...);
    }
  }

  void* obj_;
  R (*call_)(void*, Args...);
};

}  // namespace dspark
