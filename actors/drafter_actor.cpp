// The drafter actor: a thin CAF shell over drafter_core, owning the drafter object (and, for a
// model-based drafter, its backend and streams: detached, so they stay on one thread) and the
// DEALER to the verifier's drafter endpoint.
#include "actors/actors.h"

namespace dspark::actors {

namespace {

struct drafter_state {
  std::unique_ptr<zmq_channel> link;
  std::unique_ptr<drafter_core> core;
  bool was_down = false;
};

drafter_actor::behavior_type drafter_fn(drafter_actor::stateful_pointer<drafter_state> self,
                                        std::shared_ptr<drafter_state> init) {
  self->state = std::move(*init);
  return {
      [self](draft_atom, std::vector<std::string>& f) {
        if (f.size() == 1) self->state.core->handle(f[0]);
      },
      [self](link_atom, bool up) {
        // The verifier went away: its slots are gone. When it (or a new one) is reconnected,
        // announce this drafter again so it is adopted and brought up to date.
        auto& st = self->state;
        if (!up) {
          st.was_down = true;
          st.core->handle_reset();
        } else if (st.was_down) {
          st.was_down = false;
          st.link->send(frames{st.core->hello()});
        }
      },
  };
}

}  // namespace

drafter_actor spawn_drafter(caf::actor_system& sys, std::unique_ptr<zmq_channel> link,
                            std::function<std::unique_ptr<drafter_core>(drafter_core::send_fn)> make_core) {
  auto init = std::make_shared<drafter_state>();
  zmq_channel* ch = link.get();
  init->core = make_core([ch](const std::string& frame) { ch->send(frames{frame}); });
  ch->send(frames{init->core->hello()});
  init->link = std::move(link);
  auto a = sys.spawn<caf::detached>(drafter_fn, init);
  ch->start([a](frames&& f) { caf::anon_send(a, draft_atom::value, std::move(f)); }, {},
            [a](bool up) { caf::anon_send(a, link_atom::value, up); });
  return a;
}

}  // namespace dspark::actors
