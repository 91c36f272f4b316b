// server: see server.h. Start order: kv_manager, scheduler, verifier (binds), drafter
// (connects), intake (binds, connects). Stop order: the reverse, each actor awaited, then the
// objects they point to.
#include "actors/server.h"

#include <caf/all.hpp>

#include "actors/actors.h"
#include "actors/remote_drafter.h"
#include "engine/model.h"
#include "engine/spec/policy_factory.h"
#include "engine/spec/spec_gate.h"
#include "models/tokenizer/tokenizer.h"

namespace dspark::actors {

namespace {

channel_options bound_router(const std::string& endpoint, bool watch) {
  channel_options o;
  o.type = zmq::socket_type::router;
  o.endpoint = endpoint;
  o.bind = true;
  o.watch_disconnects = watch && endpoint.rfind("inproc://", 0) != 0;
  return o;
}

channel_options dealer_to(const std::string& endpoint) {
  channel_options o;
  o.type = zmq::socket_type::dealer;
  o.endpoint = endpoint;
  o.bind = false;
  o.watch_disconnects = endpoint.rfind("inproc://", 0) != 0;  // verifier lost / back
  return o;
}

bool is_tcp(const std::string& endpoint) { return endpoint.rfind("tcp://", 0) == 0; }

// CURVE on an internal tcp link (config link_curve_secret_key): the bound side holds the
// secret, a connecting side the server's public key. ipc/inproc links stay plain.
channel_options secured(channel_options o, const std::string& link_secret) {
  if (link_secret.empty() || !is_tcp(o.endpoint)) return o;
  if (o.bind) o.curve_secret_key = link_secret;
  else o.curve_server_public_key = curve_public_key(link_secret);
  return o;
}

caf::actor_system_config& caf_config(caf::actor_system_config& c) {
  // Every server actor is detached (its own thread); the pool only runs promise bookkeeping.
  c.set("scheduler.max-threads", 2);
  return c;
}

std::unique_ptr<spec_policy> default_policy(const model& m, const config::server_config& c, backend& target) {
  policy_build_options o;
  o.gamma = c.gamma;
  o.threshold = c.threshold;
  o.max_slots = c.max_requests;
  o.target = &target;
  o.device = "server " + c.device + " threads" + std::to_string(c.threads) + " " + c.precision;
  o.profile_path = c.sps_profile;
  return make_policy_by_name(c.policy, m.config(), o);
}

}  // namespace

struct server::impl {
  config::server_config cfg;
  caf::actor_system_config caf_cfg;
  std::optional<caf::actor_system> sys;
  zmq::context_t ctx{1};
  std::optional<model> m;
  // verifier role
  std::unique_ptr<backend> be;
  std::unique_ptr<remote_drafter> rd;
  kv_manager_actor kv;
  scheduler_actor sched;
  kv_manager_params kv_params;
  int32_t max_waiting = 0;
  verifier_actor verifier;
  // drafter role
  drafter_actor drafter;
  // intake role
  intake_actor intake;
  std::string client_ep, engine_ep, drafter_ep;

  // Stops one actor and drops our handle: a detached actor's thread ends only when the last
  // handle is gone (the actor system's destructor waits for it).
  template <class Handle>
  void stop(Handle& h) {
    if (!h) return;
    auto a = caf::actor_cast<caf::actor>(h);
    h = nullptr;
    caf::scoped_actor self{*sys};
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->wait_for(a);
  }
};

server::server(const config::server_config& cfg, const server_roles& roles, const server_factories& f)
    : p_(std::make_unique<impl>()) {
  impl& p = *p_;
  p.cfg = cfg;
  config::validate_server_config(cfg);
  p.sys.emplace(caf_config(p.caf_cfg));
  p.m.emplace(load_model(cfg.model));
  const model& mdl = *p.m;
  try {
    // The in-process drafter is built first: its capabilities shape the verifier's decoder.
    std::unique_ptr<dspark::drafter> local_drafter;
    const bool run_drafter = roles.drafter && cfg.draft != "none" && !cfg.drafter_endpoint.empty();
    if (run_drafter) local_drafter = f.make_drafter(mdl, cfg);
    if (roles.verifier) {
      p.be = f.make_backend(mdl, cfg);
      // The policy first: scheduled/async profile the backend for seconds, and a drafter that
      // connected to an already bound drafter endpoint in that time would not be served until the
      // verifier actor runs (its hello was seen lost in the split-process test).
      std::unique_ptr<spec_policy> pol = f.make_policy ? f.make_policy(mdl, cfg, *p.be) : default_policy(mdl, cfg, *p.be);
      if (!cfg.drafter_endpoint.empty()) {
        remote_drafter_options ro;
        ro.endpoint = cfg.drafter_endpoint;
        ro.max_slots = cfg.max_requests;
        ro.n_vocab = p.be->limits().n_vocab;
        ro.timeout = std::chrono::milliseconds(cfg.drafter_timeout_ms);
        ro.feature_shm_bytes = static_cast<size_t>(cfg.feature_shm_mib) << 20;
        if (local_drafter) {
          ro.capture_layers = local_drafter->caps().capture_layers;
          ro.dist_kind = local_drafter->caps().dist_kind;
          ro.max_sparse = local_drafter->caps().max_sparse;
        } else {
          ro.capture_layers = cfg.draft_capture_layers;
          ro.dist_kind = cfg.draft_dist == "dense"    ? draft_dist_kind::dense
                         : cfg.draft_dist == "sparse" ? draft_dist_kind::sparse
                                                      : draft_dist_kind::one_hot;
          ro.max_sparse = cfg.draft_max_sparse;
        }
        if (is_tcp(ro.endpoint)) ro.curve_secret_key = cfg.link_curve_secret_key;
        p.rd = std::make_unique<remote_drafter>(p.ctx, ro);
        p.drafter_ep = p.rd->endpoint();
      }
      auto engine =
          std::make_unique<zmq_channel>(p.ctx, secured(bound_router(cfg.engine_endpoint, true), cfg.link_curve_secret_key));
      p.engine_ep = engine->endpoint();
      verifier_options vo;
      vo.max_requests = cfg.max_requests;
      vo.kv_block_size = cfg.kv_block_size;
      vo.kv_blocks = cfg.kv_blocks;
      vo.prefix_cache = cfg.prefix_cache;
      vo.pipeline = cfg.pipeline;
      vo.gate = parse_spec_gate(cfg.spec_gate);
      backend* be = p.be.get();
      drafter* d = p.rd.get();
      const tokenizer* tok = mdl.has_tokenizer() ? &mdl.tokenizer() : nullptr;
      // Admission: kv_manager first (the scheduler reserves through it), then the scheduler.
      const kv_manager_params kvp = verifier_core::kv_params(vo, *p.be, *pol);
      p.kv = spawn_kv_manager(*p.sys, kvp);
      p.sched = spawn_scheduler(*p.sys, kvp, vo.max_waiting, p.kv);
      p.kv_params = kvp;
      p.max_waiting = vo.max_waiting;
      auto pol_holder = std::make_shared<std::unique_ptr<spec_policy>>(std::move(pol));
      p.verifier = spawn_verifier(
          *p.sys, std::move(engine),
          [be, d, tok, &mdl, vo, pol_holder](verifier_core::sink_fn sink, std::unique_ptr<admission_port> port) {
            return std::make_unique<verifier_core>(*be, d, std::move(*pol_holder), tok, mdl.stop_ids(), vo,
                                                   std::move(sink), std::move(port));
          },
          p.rd.get(), p.sched, p.kv);
    }
    if (run_drafter) {
      const std::string ep = p.drafter_ep.empty() ? cfg.drafter_endpoint : p.drafter_ep;
      auto link = std::make_unique<zmq_channel>(p.ctx, secured(dealer_to(ep), cfg.link_curve_secret_key));
      auto holder = std::make_shared<std::unique_ptr<dspark::drafter>>(std::move(local_drafter));
      const int64_t n_vocab = mdl.config().n_vocab;
      const int32_t slots = cfg.max_requests, gamma = cfg.gamma;
      p.drafter = spawn_drafter(*p.sys, std::move(link), [holder, slots, gamma, n_vocab](drafter_core::send_fn send) {
        return std::make_unique<drafter_core>(std::move(*holder), slots, gamma, n_vocab, std::move(send));
      });
    }
    if (roles.intake) {
      channel_options co = bound_router(cfg.client_endpoint, true);
      co.curve_secret_key = cfg.curve_secret_key;
      auto clients = std::make_unique<zmq_channel>(p.ctx, co);
      p.client_ep = clients->endpoint();
      const std::string ep = p.engine_ep.empty() ? cfg.engine_endpoint : p.engine_ep;
      auto engine = std::make_unique<zmq_channel>(p.ctx, secured(dealer_to(ep), cfg.link_curve_secret_key));
      intake_options io;
      io.model_id = mdl.path();
      const auto slash = io.model_id.find_last_of('/');
      if (slash != std::string::npos) io.model_id = io.model_id.substr(slash + 1);
      io.draft = cfg.draft == "none" ? "" : cfg.draft;
      io.n_ctx = cfg.n_ctx;
      io.max_message_bytes = static_cast<size_t>(cfg.max_message_bytes);
      io.max_queued = cfg.max_queued;
      p.intake = spawn_intake(*p.sys, std::move(clients), std::move(engine),
                              mdl.has_tokenizer() ? &mdl.tokenizer() : nullptr, io);
    }
  } catch (...) {
    p.stop(p.intake);
    p.stop(p.drafter);
    p.stop(p.verifier);
    p.stop(p.sched);
    p.stop(p.kv);
    throw;
  }
}

server::~server() {
  impl& p = *p_;
  p.stop(p.intake);
  p.stop(p.drafter);
  p.stop(p.verifier);
  p.stop(p.sched);
  p.stop(p.kv);
  p.rd.reset();
  p.sys.reset();
}

const std::string& server::client_endpoint() const { return p_->client_ep; }
const std::string& server::engine_endpoint() const { return p_->engine_ep; }
const std::string& server::drafter_endpoint() const { return p_->drafter_ep; }
const model& server::loaded_model() const { return *p_->m; }
zmq::context_t& server::zmq_context() { return p_->ctx; }

bool server::drain(std::chrono::milliseconds timeout) {
  if (!p_->intake) return true;
  caf::scoped_actor self{*p_->sys};
  bool ok = false;
  self->request(p_->intake, caf::duration{timeout}, drain_atom::value)
      .receive([&](bool drained) { ok = drained; }, [&](const caf::error&) { ok = false; });
  return ok;
}

void server::stop_drafter() { p_->stop(p_->drafter); }

void server::replace_scheduler() {
  impl& p = *p_;
  if (!p.verifier) return;
  scheduler_actor next = spawn_scheduler(*p.sys, p.kv_params, p.max_waiting, p.kv);
  caf::anon_send(p.verifier, replace_atom::value, next);
  p.sched = next;  // the verifier stops the old one after its handover
}

}  // namespace dspark::actors
