// The verifier actor: a thin CAF shell over verifier_core. Frames from intakes arrive in its
// mailbox; while requests run it sends itself `step` after each step, so everything that
// arrived meanwhile (new requests, cancels) is handled between two steps: requests join and
// leave the batch at step boundaries.
//
// Admission goes to the scheduler and kv_manager actors (actor_admission below). A step with
// requests waiting and a slot free asks the scheduler (`admit`) and runs the decode in the
// reply's continuation; meanwhile the actor keeps taking messages (a cancel of a request whose
// admission is under way is settled by verifier_core::start_admitted). No step waits on its
// thread for an answer, and neither the scheduler nor kv_manager ever asks the verifier, so no
// cycle of waits can form.
#include <cstdio>

#include "actors/actors.h"
#include "actors/remote_drafter.h"

namespace dspark::actors {

namespace {

// verifier_core's admission_port over the scheduler and kv_manager actors. Used only on the
// verifier actor's thread; `self` is set when the actor starts.
class actor_admission final : public admission_port {
 public:
  actor_admission(scheduler_actor sched, kv_manager_actor kv) : sched_(std::move(sched)), kv_(std::move(kv)) {}

  void enqueue(waiting_request w, verdict_fn done) override {
    if (replacing_) {  // behind the handed-over queue
      held_.push_back({std::move(w), std::move(done)});
      return;
    }
    const uint64_t id = w.id;
    self_->request(sched_, caf::infinite, enqueue_atom::value, std::move(w))
        .then([done, id](int32_t v) { done(id, static_cast<queue_verdict>(v)); },
              [done, id](caf::error&) { done(id, queue_verdict::overloaded); });
  }
  // Moves the waiting requests from the current scheduler to `next` in order (those `waiting`
  // still names), then the ones enqueued meanwhile, stops the old scheduler and calls `done`.
  // Admits sent meanwhile reach the old one after its handover and admit nothing. `verdict`
  // takes next's answers for the moved requests (it may refuse some: a smaller queue limit).
  void replace(scheduler_actor next, std::function<bool(uint64_t)> waiting, verdict_fn verdict,
               std::function<void()> done) {
    if (replacing_ || next == sched_) return;
    replacing_ = true;
    self_->request(sched_, caf::infinite, handover_atom::value)
        .then(
            [this, next, waiting, verdict, done](admitted_batch& b) {
              self_->send_exit(sched_, caf::exit_reason::user_shutdown);
              finish_replace(next, b.requests, waiting, verdict);
              done();
            },
            [this, waiting, verdict, done](caf::error& e) {
              std::fprintf(stderr, "verifier: the scheduler did not hand over its queue (%s); keeping it\n",
                           to_string(e).c_str());
              std::vector<waiting_request> none;
              finish_replace(sched_, none, waiting, verdict);
              done();
            });
  }
  void remove(uint64_t id) override { self_->send(sched_, remove_atom::value, id); }
  void release(uint64_t id) override { self_->send(kv_, release_atom::value, id); }
  void usage(usage_fn done) override {
    self_->request(kv_, caf::infinite, usage_atom::value)
        .then(
            [this, done](const kv_usage& u) {
              last_ = u;
              done(u);
            },
            [this, done](caf::error&) { done(last_); });
  }
  kv_usage last_usage() const override { return last_; }
  bool admit_now(int32_t, int32_t, std::vector<waiting_request>&) override { return false; }

  verifier_actor::pointer self_ = nullptr;
  scheduler_actor sched_;
  kv_manager_actor kv_;

 private:
  struct held_enqueue {
    waiting_request w;
    verdict_fn done;
  };
  void finish_replace(scheduler_actor next, std::vector<waiting_request>& moved,
                      const std::function<bool(uint64_t)>& waiting, const verdict_fn& verdict) {
    sched_ = std::move(next);
    replacing_ = false;
    for (auto& w : moved)
      if (waiting(w.id)) enqueue(std::move(w), verdict);
    std::vector<held_enqueue> held;
    held.swap(held_);
    for (auto& h : held)
      if (waiting(h.w.id)) enqueue(std::move(h.w), std::move(h.done));
  }

  kv_usage last_;
  bool replacing_ = false;
  std::vector<held_enqueue> held_;  // enqueues that arrived during a replacement
};

struct verifier_state {
  std::unique_ptr<zmq_channel> engine;
  std::unique_ptr<verifier_core> core;
  actor_admission* admission = nullptr;  // owned by core
  remote_drafter* rd = nullptr;
  bool stepping = false;
};

using verifier_pointer = verifier_actor::stateful_pointer<verifier_state>;

// Steps 2-4 of a step, then the next step or idle.
void run_step(verifier_pointer self) {
  auto& st = self->state;
  st.core->run_step();
  if (st.core->busy()) {
    self->send(self, step_atom::value);
  } else {
    st.stepping = false;
    if (st.rd) st.rd->poll();  // take registrations while idle
  }
}

verifier_actor::behavior_type verifier_fn(verifier_pointer self, std::shared_ptr<verifier_state> init) {
  self->state = std::move(*init);
  self->state.admission->self_ = self;
  auto kick = [self] {
    if (!self->state.stepping && self->state.core->busy()) {
      self->state.stepping = true;
      self->send(self, step_atom::value);
    }
  };
  return {
      [self, kick](engine_atom, std::vector<std::string>& f) {
        if (f.size() != 2) return;  // [intake id][payload]
        self->state.core->handle(f[0], f[1]);
        kick();
      },
      [self, kick](lost_atom, const std::string& peer) {
        self->state.core->drop_peer(peer);
        kick();
      },
      [self](draft_atom) {
        // A drafter registered or went away: take it now unless a step (whose propose polls
        // anyway) is under way.
        if (!self->state.stepping && self->state.rd) self->state.rd->poll();
      },
      [self, kick](replace_atom, scheduler_actor next) {
        auto& st = self->state;
        verifier_core* core = st.core.get();
        st.admission->replace(
            std::move(next), [core](uint64_t id) { return core->waiting(id); },
            [core](uint64_t id, queue_verdict v) { core->verdict(id, v); },
            [core, kick] {
              core->admission_changed();
              kick();
            });
      },
      [self](step_atom) {
        auto& st = self->state;
        verifier_core& core = *st.core;
        if (!core.wants_admission()) return run_step(self);
        const verifier_core::admission_ask ask = core.begin_admission();
        self->request(st.admission->sched_, caf::infinite, admit_atom::value, ask.free_slots, ask.shared_credit)
            .then(
                [self](admitted_batch& b) {
                  self->state.core->start_admitted(b.requests);
                  run_step(self);
                },
                [self](caf::error& e) {
                  const std::string why = "the scheduler did not answer: " + to_string(e);
                  std::fprintf(stderr, "verifier: %s; rejecting the waiting requests\n", why.c_str());
                  self->state.core->reject_waiting(why);
                  run_step(self);
                });
      },
  };
}

}  // namespace

verifier_actor spawn_verifier(caf::actor_system& sys, std::unique_ptr<zmq_channel> engine, make_verifier_core_fn make_core,
                              remote_drafter* rd, scheduler_actor sched, kv_manager_actor kv) {
  auto init = std::make_shared<verifier_state>();
  zmq_channel* ch = engine.get();
  auto port = std::make_unique<actor_admission>(std::move(sched), std::move(kv));
  init->admission = port.get();
  init->core = make_core([ch](const std::string& peer, const std::string& frame) { ch->send(frames{peer, frame}); },
                         std::move(port));
  init->engine = std::move(engine);
  init->rd = rd;
  auto a = sys.spawn<caf::detached>(verifier_fn, init);
  if (rd) {
    rd->set_notify([a] { caf::anon_send(a, draft_atom::value); });
    // A hello that arrived before the notify was set waits in the inbox unannounced: look now.
    caf::anon_send(a, draft_atom::value);
  }
  ch->start([a](frames&& f) { caf::anon_send(a, engine_atom::value, std::move(f)); },
            [a](const std::string& peer) { caf::anon_send(a, lost_atom::value, peer); });
  return a;
}

}  // namespace dspark::actors
