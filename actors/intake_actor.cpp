// The intake actor: a thin CAF shell over intake_core, owning the client ROUTER and the DEALER
// to the verifier (both through zmq_channel I/O threads). drain stops admission and is answered
// once the last in-flight request finished.
#include "actors/actors.h"

namespace dspark::actors {

namespace {

struct intake_state {
  std::unique_ptr<zmq_channel> clients;
  std::unique_ptr<zmq_channel> engine;
  std::unique_ptr<intake_core> core;
  std::vector<caf::typed_response_promise<bool>> drains;
};

void settle_drains(intake_state& st) {
  if (!st.core->draining() || st.core->live() > 0) return;
  for (auto& rp : st.drains) rp.deliver(true);
  st.drains.clear();
}

intake_actor::behavior_type intake_fn(intake_actor::stateful_pointer<intake_state> self,
                                      std::shared_ptr<intake_state> init) {
  self->state = std::move(*init);
  return {
      [self](client_atom, std::vector<std::string>& f) { self->state.core->on_client(std::move(f)); },
      [self](engine_atom, std::vector<std::string>& f) {
        self->state.core->on_engine(std::move(f));
        settle_drains(self->state);
      },
      [self](lost_atom, const std::string& client) { self->state.core->on_client_lost(client); },
      [self](link_atom, bool up) {
        if (up) return;
        self->state.core->on_engine_lost();
        settle_drains(self->state);
      },
      [self](drain_atom) -> caf::result<bool> {
        auto& st = self->state;
        st.core->begin_drain();
        if (st.core->live() == 0) return true;
        st.drains.push_back(self->make_response_promise<bool>());
        return st.drains.back();
      },
  };
}

}  // namespace

intake_actor spawn_intake(caf::actor_system& sys, std::unique_ptr<zmq_channel> clients,
                          std::unique_ptr<zmq_channel> engine, const tokenizer* tok, const intake_options& opt) {
  auto init = std::make_shared<intake_state>();
  zmq_channel* cl = clients.get();
  zmq_channel* en = engine.get();
  init->core = std::make_unique<intake_core>(
      tok, opt, [cl](frames f) { cl->send(std::move(f)); }, [en](frames f) { en->send(std::move(f)); });
  init->clients = std::move(clients);
  init->engine = std::move(engine);
  auto a = sys.spawn<caf::detached>(intake_fn, init);
  cl->start([a](frames&& f) { caf::anon_send(a, client_atom::value, std::move(f)); },
            [a](const std::string& peer) { caf::anon_send(a, lost_atom::value, peer); });
  en->start([a](frames&& f) { caf::anon_send(a, engine_atom::value, std::move(f)); }, {},
            [a](bool up) { caf::anon_send(a, link_atom::value, up); });
  return a;
}

}  // namespace dspark::actors
