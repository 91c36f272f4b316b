// The kv_manager and scheduler actors: thin CAF shells over the kv_manager and scheduler objects
// (actor_protocols.h gives their interfaces). Both hold plain CPU state and touch no socket or
// device; they are spawned detached anyway: a thread of their own that sleeps on its mailbox
// answered the verifier's admit round trip in ~100 us median on the 2-core VM against ~120 us on
// CAF's 2-thread worker pool (bench_actors --admission, docs/benchmarks.md).
#include <algorithm>
#include <cstdio>

#include "actors/actors.h"

namespace dspark::actors {

namespace {

struct kv_state {
  std::unique_ptr<kv_manager> kv;
};

kv_manager_actor::behavior_type kv_manager_fn(kv_manager_actor::stateful_pointer<kv_state> self,
                                              kv_manager_params p) {
  self->state.kv = std::make_unique<kv_manager>(p);
  return {
      [self](reserve_atom, const std::vector<kv_ask>& asks, int32_t shared_credit) -> int32_t {
        kv_manager& kv = *self->state.kv;
        kv.set_shared_credit(std::max(shared_credit, 0));
        return kv.reserve_prefix(asks);
      },
      [self](release_atom, uint64_t id) { self->state.kv->release(id); },
      [self](usage_atom) -> kv_usage { return self->state.kv->usage(); },
  };
}

struct scheduler_state {
  std::unique_ptr<scheduler> sched;
  kv_manager_actor kv;
  std::vector<kv_ask> asks;  // admit's scratch
};

scheduler_actor::behavior_type scheduler_fn(scheduler_actor::stateful_pointer<scheduler_state> self,
                                            kv_manager_params shape, int32_t max_waiting, kv_manager_actor kv) {
  self->state.sched = std::make_unique<scheduler>(shape, max_waiting);
  self->state.kv = std::move(kv);
  return {
      [self](enqueue_atom, waiting_request& w) -> int32_t {
        return static_cast<int32_t>(self->state.sched->enqueue(std::move(w)));
      },
      [self](remove_atom, uint64_t id) { self->state.sched->remove(id); },
      [self](admit_atom, int32_t free_slots, int32_t shared_credit) -> caf::result<admitted_batch> {
        scheduler_state& st = self->state;
        st.asks.clear();
        st.sched->heads(free_slots, st.asks);
        if (st.asks.empty()) return admitted_batch{};
        // await: no other message (enqueue, remove) is taken until kv_manager answers, so the
        // heads it reserves for are still the heads popped.
        auto rp = self->make_response_promise<admitted_batch>();
        self->request(st.kv, caf::infinite, reserve_atom::value, st.asks, shared_credit)
            .await(
                [self, rp](int32_t n) mutable {
                  admitted_batch b;
                  self->state.sched->pop(n, b.requests);
                  rp.deliver(std::move(b));
                },
                [rp](caf::error& e) mutable {
                  std::fprintf(stderr, "scheduler: kv_manager did not answer (%s)\n", to_string(e).c_str());
                  rp.deliver(std::move(e));
                });
        return rp;
      },
      [self](queued_atom) -> int32_t { return self->state.sched->queued(); },
      [self](handover_atom) -> admitted_batch {
        admitted_batch b;
        self->state.sched->pop(self->state.sched->queued(), b.requests);
        return b;
      },
  };
}

}  // namespace

kv_manager_actor spawn_kv_manager(caf::actor_system& sys, const kv_manager_params& p) {
  kv_manager probe(p);  // invalid sizes throw here, on the caller's thread
  return sys.spawn<caf::detached>(kv_manager_fn, p);
}

scheduler_actor spawn_scheduler(caf::actor_system& sys, const kv_manager_params& shape, int32_t max_waiting,
                                kv_manager_actor kv) {
  scheduler probe(shape, max_waiting);
  return sys.spawn<caf::detached>(scheduler_fn, shape, max_waiting, std::move(kv));
}

}  // namespace dspark::actors
