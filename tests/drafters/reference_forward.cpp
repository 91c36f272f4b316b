// Reference drafter forward in double precision: plain loops, one formula per line of the doc.
#include "tests/drafters/reference_forward.h"

#include <cmath>

namespace dspark::test {

namespace {

// y = W x for W [out, in] row-major (f32 weights read as double).
dvec mv(const host_tensor& W, const dvec& x) {
  const int64_t out = W.shape[0], in = W.shape[1];
  dvec y(static_cast<size_t>(out), 0.0);
  for (int64_t o = 0; o < out; ++o) {
    double s = 0;
    for (int64_t i = 0; i < in; ++i) s += static_cast<double>(W.data[static_cast<size_t>(o * in + i)]) * x[static_cast<size_t>(i)];
    y[static_cast<size_t>(o)] = s;
  }
  return y;
}

dvec rmsnorm(const dvec& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  dvec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
  return y;
}

// HF rotate_half RoPE on every head of x ([n_heads * hd]) at position pos (llama3 scaling is
// not exercised by these tests; rope_scaling must be null).
void rope(dvec& x, int64_t hd, int64_t pos, double theta) {
  const int64_t half = hd / 2;
  for (size_t h = 0; h < x.size() / static_cast<size_t>(hd); ++h) {
    double* v = x.data() + h * static_cast<size_t>(hd);
    for (int64_t i = 0; i < half; ++i) {
      const double inv = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
      const double a = static_cast<double>(pos) * inv, cs = std::cos(a), sn = std::sin(a);
      const double x1 = v[i], x2 = v[i + half];
      v[i] = x1 * cs - x2 * sn;
      v[i + half] = x2 * cs + x1 * sn;
    }
  }
}

void headnorm(dvec& x, int64_t hd, const host_tensor& w, double eps) {
  for (size_t h = 0; h < x.size() / static_cast<size_t>(hd); ++h) {
    dvec part(x.begin() + static_cast<long>(h * hd), x.begin() + static_cast<long>((h + 1) * hd));
    part = rmsnorm(part, w.ptr(), eps);
    std::copy(part.begin(), part.end(), x.begin() + static_cast<long>(h * hd));
  }
}

// Attention of q over keys K/V (all listed rows), grouped-query.
dvec attend(const drafter_config& c, const dvec& q, const std::vector<dvec>& K, const std::vector<dvec>& Vv) {
  const int64_t hd = c.head_dim, group = c.n_head / c.n_head_kv;
  dvec out(static_cast<size_t>(c.n_head * hd), 0.0);
  for (int64_t h = 0; h < c.n_head; ++h) {
    const int64_t g = h / group;
    std::vector<double> sc(K.size());
    double mx = -1e300;
    for (size_t j = 0; j < K.size(); ++j) {
      double s = 0;
      for (int64_t i = 0; i < hd; ++i) s += q[static_cast<size_t>(h * hd + i)] * K[j][static_cast<size_t>(g * hd + i)];
      sc[j] = s / std::sqrt(static_cast<double>(hd));
      mx = std::max(mx, sc[j]);
    }
    double z = 0;
    for (double& s : sc) z += (s = std::exp(s - mx));
    for (size_t j = 0; j < K.size(); ++j)
      for (int64_t i = 0; i < hd; ++i) out[static_cast<size_t>(h * hd + i)] += sc[j] / z * Vv[j][static_cast<size_t>(g * hd + i)];
  }
  return out;
}

dvec mlp(const drafter_layer_weights& L, const dvec& x) {
  const dvec g = mv(L.w_gate, x), u = mv(L.w_up, x);
  dvec a(g.size());
  for (size_t i = 0; i < g.size(); ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return mv(L.w_down, a);
}

dvec row_of(const std::vector<float>& table, int64_t row, int64_t d) {
  return dvec(table.begin() + row * d, table.begin() + (row + 1) * d);
}

dvec lm_head(const ref_target& t, const dvec& h, int64_t d) {
  const int64_t V = static_cast<int64_t>(t.lm_head.size()) / d;
  dvec y(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += static_cast<double>(t.lm_head[static_cast<size_t>(v * d + i)]) * h[static_cast<size_t>(i)];
    y[static_cast<size_t>(v)] = s;
  }
  return y;
}

void add(dvec& a, const dvec& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

ref_block_out ref_block(const drafter_config& c, const drafter_weights& w, const ref_target& t,
                        const std::vector<std::vector<float>>& F, int32_t anchor, const std::vector<int32_t>& prev) {
  const int64_t d = c.n_embd, G = c.block_size, s = static_cast<int64_t>(F.size()), r = c.markov_rank;
  const double eps = c.rms_eps;
  // Context rows: c_t = RMSNorm(fc F_t), per layer k = RoPE(knorm?(Wk c_t), t), v = Wv c_t.
  std::vector<std::vector<dvec>> Kc(static_cast<size_t>(c.n_layer)), Vc(static_cast<size_t>(c.n_layer));
  for (int64_t p = 0; p < s; ++p) {
    const dvec ct = rmsnorm(mv(w.fc, dvec(F[static_cast<size_t>(p)].begin(), F[static_cast<size_t>(p)].end())), w.hidden_norm.ptr(), eps);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const drafter_layer_weights& L = w.layers[static_cast<size_t>(l)];
      dvec k = mv(L.wk, ct);
      if (c.qk_norm) headnorm(k, c.head_dim, L.k_norm, eps);
      rope(k, c.head_dim, p, c.rope_theta);
      Kc[static_cast<size_t>(l)].push_back(k);
      Vc[static_cast<size_t>(l)].push_back(mv(L.wv, ct));
    }
  }
  // Block.
  std::vector<dvec> h;
  for (int64_t j = 0; j < G; ++j) h.push_back(row_of(t.embed, j == 0 ? anchor : c.mask_token_id, d));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const drafter_layer_weights& L = w.layers[static_cast<size_t>(l)];
    std::vector<dvec> q(static_cast<size_t>(G)), K = Kc[static_cast<size_t>(l)], Vv = Vc[static_cast<size_t>(l)];
    for (int64_t j = 0; j < G; ++j) {
      const dvec a = rmsnorm(h[static_cast<size_t>(j)], L.attn_norm.ptr(), eps);
      dvec qq = mv(L.wq, a), k = mv(L.wk, a);
      if (c.qk_norm) {
        headnorm(qq, c.head_dim, L.q_norm, eps);
        headnorm(k, c.head_dim, L.k_norm, eps);
      }
      rope(qq, c.head_dim, s + j, c.rope_theta);
      rope(k, c.head_dim, s + j, c.rope_theta);
      q[static_cast<size_t>(j)] = qq;
      K.push_back(k);
      Vv.push_back(mv(L.wv, a));
    }
    for (int64_t j = 0; j < G; ++j) add(h[static_cast<size_t>(j)], mv(L.wo, attend(c, q[static_cast<size_t>(j)], K, Vv)));
    for (int64_t j = 0; j < G; ++j) add(h[static_cast<size_t>(j)], mlp(L, rmsnorm(h[static_cast<size_t>(j)], L.ffn_norm.ptr(), eps)));
  }
  ref_block_out o;
  dvec state(static_cast<size_t>(r), 0.0);
  for (size_t k = 0; k < prev.size(); ++k) {
    const dvec hk = rmsnorm(h[k], w.norm.ptr(), eps);
    const dvec U = lm_head(t, hk, d);
    dvec L = U;
    dvec e;
    if (c.markov != markov_kind::none) e = row_of(w.markov_w1.data, prev[k], r);
    if (c.markov == markov_kind::vanilla) add(L, mv(w.markov_w2, e));
    if (c.markov == markov_kind::rnn) {
      dvec z = state;
      z.insert(z.end(), e.begin(), e.end());
      z.insert(z.end(), hk.begin(), hk.end());
      dvec gco = mv(w.rnn_w, z);
      for (size_t i = 0; i < gco.size(); ++i) gco[i] += w.rnn_b.data[i];
      dvec to(static_cast<size_t>(r));
      for (int64_t i = 0; i < r; ++i) {
        const double gs = sig(gco[static_cast<size_t>(i)]);
        state[static_cast<size_t>(i)] = gs * state[static_cast<size_t>(i)] + (1 - gs) * std::tanh(gco[static_cast<size_t>(r + i)]);
        to[static_cast<size_t>(i)] = std::tanh(gco[static_cast<size_t>(2 * r + i)]);
      }
      add(L, mv(w.markov_w2, to));
    }
    if (c.confidence) {
      dvec in = hk;
      in.insert(in.end(), e.begin(), e.end());
      o.conf.push_back(mv(w.conf_w, in)[0] + w.conf_b.data[0]);
    }
    o.base.push_back(U);
    o.logits.push_back(L);
  }
  return o;
}

std::vector<dvec> ref_eagle(const drafter_config& c, const drafter_weights& w, const ref_target& t,
                            const std::vector<std::vector<float>>& F, const std::vector<int32_t>& tokens,
                            const std::vector<int32_t>& chain) {
  const int64_t d = c.n_embd, P = static_cast<int64_t>(F.size());
  const double eps = c.rms_eps;
  const drafter_layer_weights& L = w.layers[0];
  std::vector<dvec> K, Vv;
  // One draft row (f, y) at position p; returns h (pre-norm).
  auto row = [&](const dvec& f, int32_t y, int64_t p) {
    dvec u = rmsnorm(row_of(t.embed, y, d), w.input_norm.ptr(), eps);
    const dvec fn = rmsnorm(f, w.hidden_norm.ptr(), eps);
    u.insert(u.end(), fn.begin(), fn.end());
    dvec q = mv(L.wq, u), k = mv(L.wk, u);
    if (c.qk_norm) {
      headnorm(q, c.head_dim, L.q_norm, eps);
      headnorm(k, c.head_dim, L.k_norm, eps);
    }
    rope(q, c.head_dim, p, c.rope_theta);
    rope(k, c.head_dim, p, c.rope_theta);
    K.push_back(k);
    Vv.push_back(mv(L.wv, u));
    dvec h = f;
    add(h, mv(L.wo, attend(c, q, K, Vv)));
    add(h, mlp(L, rmsnorm(h, L.ffn_norm.ptr(), eps)));
    return h;
  };
  dvec h;
  for (int64_t p = 0; p < P; ++p)
    h = row(mv(w.fc, dvec(F[static_cast<size_t>(p)].begin(), F[static_cast<size_t>(p)].end())), tokens[static_cast<size_t>(p)], p);
  std::vector<dvec> out;
  out.push_back(lm_head(t, rmsnorm(h, w.norm.ptr(), eps), d));
  for (size_t j = 0; j < chain.size(); ++j) {
    h = row(h, chain[j], P + static_cast<int64_t>(j));
    out.push_back(lm_head(t, rmsnorm(h, w.norm.ptr(), eps), d));
  }
  return out;
}

}  // namespace dspark::test
