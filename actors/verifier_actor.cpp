// The verifier actor: a thin CAF shell over verifier_core. Frames from intakes arrive in its
// mailbox; while requests run it sends itself `step` after each step, so everything that
// arrived meanwhile (new requests, cancels) is handled between two steps: requests join and
// leave the batch at step boundaries.
#include "actors/actors.h"
#include "actors/remote_drafter.h"

namespace dspark::actors {

namespace {

struct verifier_state {
  std::unique_ptr<zmq_channel> engine;
  std::unique_ptr<verifier_core> core;
  remote_drafter* rd = nullptr;
  bool stepping = false;
};

verifier_actor::behavior_type verifier_fn(verifier_actor::stateful_pointer<verifier_state> self,
                                          std::shared_ptr<verifier_state> init) {
  self->state = std::move(*init);
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
      [self](step_atom) {
        auto& st = self->state;
        st.core->step();
        if (st.core->busy()) {
          self->send(self, step_atom::value);
        } else {
          st.stepping = false;
          if (st.rd) st.rd->poll();  // take registrations while idle
        }
      },
  };
}

}  // namespace

verifier_actor spawn_verifier(caf::actor_system& sys, std::unique_ptr<zmq_channel> engine,
                              std::function<std::unique_ptr<verifier_core>(verifier_core::sink_fn)> make_core,
                              remote_drafter* rd) {
  auto init = std::make_shared<verifier_state>();
  zmq_channel* ch = engine.get();
  init->core = make_core([ch](const std::string& peer, const std::string& frame) { ch->send(frames{peer, frame}); });
  init->engine = std::move(engine);
  init->rd = rd;
  auto a = sys.spawn<caf::detached>(verifier_fn, init);
  if (rd) rd->set_notify([a] { caf::anon_send(a, draft_atom::value); });
  ch->start([a](frames&& f) { caf::anon_send(a, engine_atom::value, std::move(f)); },
            [a](const std::string& peer) { caf::anon_send(a, lost_atom::value, peer); });
  return a;
}

}  // namespace dspark::actors
