#include "bench/sim/cluster_sim.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <queue>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/kv_event_log.h"
#include "router/prefill_window.h"
#include "worker/kv_event_proto.h"

namespace tandem::sim {
namespace {

int64_t Blocks(int64_t tokens, int64_t block_size) { return (tokens + block_size - 1) / block_size; }

class Simulator {
 public:
  Simulator(const SimConfig& config, const std::vector<SimRequest>& requests)
      : c_(config),
        reqs_(requests),
        window_({config.window_tokens_per_worker, std::numeric_limits<int>::max(),
                 std::numeric_limits<int64_t>::max()}),
        router_(config.routing) {
    for (int i = 0; i < c_.num_prefill; ++i) AddWorker(true, i, c_.prefill_kv_blocks);
    for (int i = 0; i < c_.num_decode; ++i) AddWorker(false, i, c_.decode_kv_blocks);
    seqs_.resize(reqs_.size());
    result_.requests.resize(reqs_.size());
    next_turn_.assign(reqs_.size(), -1);
    for (size_t i = 0; i < reqs_.size(); ++i) {
      const int64_t p = reqs_[i].previous;
      if (p >= 0 && p < static_cast<int64_t>(i)) next_turn_[p] = static_cast<int64_t>(i);
    }
  }

  SimResult Run() {
    const int64_t n = static_cast<int64_t>(reqs_.size());
    // A later turn arrives when its previous one ends; one whose previous
    // turn is not before it never does.
    for (int64_t i = 0; i < n; ++i) {
      if (reqs_[i].previous < 0) Push(reqs_[i].arrival_s, kArrival, i);
    }
    if (c_.heartbeat_s > 0) Push(c_.heartbeat_s, kHeartbeat, 0);
    // Bounded: every event is an arrival (n), a step's end, a transfer's end
    // or a heartbeat; steps end only with work done, heartbeats stop once
    // every request ended.
    while (!events_.empty()) {
      const Event e = events_.top();
      events_.pop();
      now_ = e.time;
      switch (e.kind) {
        case kArrival: Ready(e.a); break;
        case kStepEnd:
          if (workers_[e.a].step_version == e.b) StepEnd(e.a);
          break;
        case kTransferEnd: TransferEnd(e.a); break;
        case kHeartbeat:
          Heartbeat();
          // Only while something else can still happen (a request the
          // pools can never hold would otherwise keep the clock running).
          if (ended_ < n && !events_.empty()) Push(now_ + c_.heartbeat_s, kHeartbeat, 0);
          break;
      }
    }
    for (const SimRequestResult& r : result_.requests) {
      if (r.completed) result_.duration_s = std::max(result_.duration_s, r.start_s + r.e2e_s);
    }
    return std::move(result_);
  }

 private:
  enum Kind { kArrival, kStepEnd, kTransferEnd, kHeartbeat };
  struct Event {
    double time;
    uint64_t order;  // ties: first pushed first
    Kind kind;
    int64_t a;
    uint64_t b = 0;
    bool operator>(const Event& o) const { return time != o.time ? time > o.time : order > o.order; }
  };
  struct Worker {
    bool prefill = true;
    WorkerHandle handle;  // the router's view: id, block size
    std::unique_ptr<KvEventLog> log;
    std::unique_ptr<KvCacheManager> kv;
    uint64_t events_applied = 0;
    int in_flight = 0;
    int64_t in_flight_blocks = 0;
    int64_t promised_blocks = 0;      // decode: blocks promised to admitted requests' outputs
    std::deque<int64_t> waiting;      // prefill: routed here, not yet holding blocks
    std::vector<int64_t> running;     // prefill: computing; decode: generating
    bool busy = false;
    double remaining_s = 0;           // of the step in progress, at full speed
    double step_start_s = 0;          // when the step in progress began
    uint64_t step_version = 0;
    std::vector<std::pair<int64_t, int64_t>> step;  // (request, tokens it computes)
  };
  struct Seq {
    std::vector<int32_t> prompt;  // as sent
    std::vector<int32_t> tokens;  // on the decode worker: prompt + output so far
    int decode = -1, prefill = -1;
    int64_t decode_load = 0, prefill_load = 0;
    int64_t computed = 0;         // prefill: prompt tokens with KV
    int64_t generated = 0;        // tokens out (the prefill's first included)
    int64_t promise = 0;          // decode blocks promised for the output
    double last_token_s = 0;
  };

  void AddWorker(bool prefill, int i, int64_t blocks) {
    Worker w;
    w.prefill = prefill;
    w.handle.id = absl::StrCat(prefill ? "prefill-" : "decode-", i);
    w.handle.kv_block_size = c_.block_size;
    w.log = std::make_unique<KvEventLog>();
    KvCacheManagerOptions o;
    o.num_blocks = static_cast<int32_t>(blocks);
    o.block_size = c_.block_size;
    o.event_log = w.log.get();
    w.kv = std::make_unique<KvCacheManager>(o);
    workers_.push_back(std::move(w));
  }
  int PrefillIndex(int i) const { return i; }
  int DecodeIndex(int i) const { return c_.num_prefill + i; }

  void Push(double t, Kind k, int64_t a, uint64_t b = 0) { events_.push({t, next_order_++, k, a, b}); }

  // The real choice: KvRouter's chooser over this role's workers.
  int Choose(bool prefill, int64_t i, int64_t* load) {
    std::vector<WorkerPool::Candidate> candidates;
    std::vector<int> index;
    for (int k = 0; k < (prefill ? c_.num_prefill : c_.num_decode); ++k) {
      Worker& w = workers_[prefill ? PrefillIndex(k) : DecodeIndex(k)];
      candidates.push_back({&w.handle, w.in_flight, w.in_flight_blocks});
      index.push_back(prefill ? PrefillIndex(k) : DecodeIndex(k));
    }
    KvRouter::Prompt prompt(seqs_[i].prompt);
    const WorkerPool::Choice choice = router_.ChooserFor(
        prefill ? v1::WORKER_ROLE_PREFILL : v1::WORKER_ROLE_DECODE, &prompt)(candidates);
    Worker& w = workers_[index[choice.index]];
    ++w.in_flight;
    w.in_flight_blocks += choice.load_blocks;
    *load = choice.load_blocks;
    return index[choice.index];
  }
  void Done(int worker, int64_t load) {
    Worker& w = workers_[worker];
    --w.in_flight;
    w.in_flight_blocks -= load;
  }

  // Request i may be sent: now, or when a slot frees under a cap.
  void Ready(int64_t i) {
    if (c_.concurrency > 0 && in_flight_ >= c_.concurrency) {
      ready_.push_back(i);
      return;
    }
    Send(i);
  }

  void Send(int64_t i) {
    ++in_flight_;
    Seq& s = seqs_[i];
    const SimRequest& r = reqs_[i];
    if (r.previous >= 0) {  // the conversation so far, then the new message
      s.prompt = std::move(seqs_[r.previous].tokens);
      seqs_[r.previous].tokens = {};
    }
    s.prompt.insert(s.prompt.end(), r.prompt.begin(), r.prompt.end());
    result_.requests[i].start_s = now_;
    result_.requests[i].prompt_tokens = static_cast<int64_t>(s.prompt.size());
    bool started = false;
    window_.Arrive(static_cast<uint64_t>(i), static_cast<int64_t>(s.prompt.size()), c_.num_prefill, &started);
    if (started) Admit(i);
  }

  void StartQueued() {
    for (uint64_t i : window_.Drain(c_.num_prefill)) Admit(static_cast<int64_t>(i));
  }

  void Admit(int64_t i) {
    Seq& s = seqs_[i];
    const SimRequest& r = reqs_[i];
    s.decode = Choose(false, i, &s.decode_load);
    Worker& d = workers_[s.decode];
    const int64_t prompt = static_cast<int64_t>(s.prompt.size());
    const CachedPrefix prefix = c_.decode_prefix_reuse ? d.kv->FindCachedPrefix(s.prompt) : CachedPrefix{};
    const int64_t need = Blocks(prompt, c_.block_size) - static_cast<int64_t>(prefix.blocks.size());
    const int64_t promise = Blocks(prompt + r.output_len, c_.block_size) - Blocks(prompt, c_.block_size);
    // Room for the prompt's new blocks and the output's (the engine's
    // promise of the whole context), beside what is promised already.
    if (need + promise + d.promised_blocks > d.kv->NumFreeBlocks() ||
        !d.kv->Allocate(SeqId(i), s.prompt, prompt - prefix.num_cached_tokens, prefix).ok()) {
      Done(s.decode, s.decode_load);
      s.decode = -1;
      window_.DecodeFull();
      window_.Requeue(static_cast<uint64_t>(i), prompt, /*bounded=*/false);
      return;  // tried again when a request ends (DecodeRoom)
    }
    d.promised_blocks += promise;
    s.promise = promise;
    s.tokens = s.prompt;
    result_.requests[i].shipped_blocks = need;
    window_.DecodeAdmitted();
    s.prefill = Choose(true, i, &s.prefill_load);
    workers_[s.prefill].waiting.push_back(i);
    TryStep(s.prefill);
    StartQueued();
  }

  // Processor sharing: a busy worker's speed with `busy` workers stepping.
  double Speed(int busy) const {
    if (c_.shared_cores <= 0 || busy == 0) return 1.0;
    const double demand = static_cast<double>(busy) * c_.threads_per_worker;
    if (demand <= c_.shared_cores) return 1.0;
    return c_.sharing_efficiency * static_cast<double>(c_.shared_cores) / demand;
  }
  // Brings every busy worker's remaining work to now at the old speed.
  void Advance() {
    const double speed = Speed(busy_);
    for (Worker& w : workers_) {
      if (w.busy) w.remaining_s -= (now_ - last_advance_) * speed;
    }
    last_advance_ = now_;
  }
  // After the busy set changed: every busy worker's end at the new speed.
  void Reschedule(int changed) {
    const double speed = Speed(busy_);
    if (c_.shared_cores <= 0) {  // speed is always 1: only the changed worker moves
      Worker& w = workers_[changed];
      if (w.busy) Push(now_ + std::max(0.0, w.remaining_s), kStepEnd, changed, ++w.step_version);
      return;
    }
    for (size_t k = 0; k < workers_.size(); ++k) {
      Worker& w = workers_[k];
      if (w.busy) Push(now_ + std::max(0.0, w.remaining_s) / speed, kStepEnd, static_cast<int64_t>(k), ++w.step_version);
    }
  }

  void TryStep(int wi) {
    Worker& w = workers_[wi];
    if (w.busy) return;
    StepShape shape;
    w.step.clear();
    if (w.prefill) {
      // First come, first served into blocks: a request waits until its
      // prompt fits (its cached prefix taken from the pool's cache).
      while (!w.waiting.empty() && static_cast<int>(w.running.size()) < c_.max_num_seqs) {
        const int64_t i = w.waiting.front();
        const std::vector<int32_t>& prompt = seqs_[i].prompt;
        const CachedPrefix prefix = w.kv->FindCachedPrefix(prompt);
        if (!w.kv->Allocate(SeqId(i), prompt, static_cast<int64_t>(prompt.size()) - prefix.num_cached_tokens, prefix)
                 .ok()) {
          break;
        }
        seqs_[i].computed = prefix.num_cached_tokens;
        result_.requests[i].prefill_cached_tokens = prefix.num_cached_tokens;
        w.running.push_back(i);
        w.waiting.pop_front();
      }
      int64_t budget = c_.max_num_batched_tokens;
      for (int64_t i : w.running) {
        const int64_t left = static_cast<int64_t>(seqs_[i].prompt.size()) - seqs_[i].computed;
        const int64_t n = std::min(left, budget);
        if (n <= 0) continue;
        w.step.emplace_back(i, n);
        shape += StepShape::Of(static_cast<double>(n), static_cast<double>(seqs_[i].computed));
        budget -= n;
        if (budget == 0) break;
      }
    } else {
      for (int64_t i : w.running) {
        if (static_cast<int>(w.step.size()) >= c_.max_num_seqs) break;
        Seq& s = seqs_[i];
        // The last token goes in: one more slot, a new block taken from the promise.
        const int64_t before = w.kv->BlockTable(SeqId(i)).size();
        (void)w.kv->Allocate(SeqId(i), s.tokens, 1);
        if (static_cast<int64_t>(w.kv->BlockTable(SeqId(i)).size()) > before && s.promise > 0) {
          --s.promise;
          --w.promised_blocks;
        }
        w.step.emplace_back(i, 1);
        shape += StepShape::Of(1, static_cast<double>(s.tokens.size() - 1));
      }
    }
    if (w.step.empty()) return;
    Advance();
    w.busy = true;
    w.step_start_s = now_;
    ++busy_;
    w.remaining_s = (w.prefill ? c_.prefill_cost : c_.decode_cost).Seconds(shape);
    Reschedule(wi);
  }

  void StepEnd(int wi) {
    Advance();
    Worker& w = workers_[wi];
    w.busy = false;
    --busy_;
    RoleSteps& role = w.prefill ? result_.prefill_steps : result_.decode_steps;
    ++role.count;
    role.seconds += now_ - w.step_start_s;
    const std::vector<std::pair<int64_t, int64_t>> step = std::move(w.step);
    w.step.clear();
    if (w.prefill) {
      for (const auto& [i, n] : step) {
        Seq& s = seqs_[i];
        s.computed += n;
        (void)w.kv->CommitComputed(SeqId(i), s.prompt, s.computed);
        if (s.computed == static_cast<int64_t>(s.prompt.size())) {
          // The first token is sampled; it reaches the client once the KV
          // the decode worker lacks is flushed to it.
          w.running.erase(std::find(w.running.begin(), w.running.end(), i));
          const double bytes = static_cast<double>(result_.requests[i].shipped_blocks) * c_.kv_bytes_per_block;
          Push(now_ + c_.transfer_latency_s + bytes / c_.transfer_bytes_per_s, kTransferEnd, i);
        }
      }
    } else {
      for (const auto& [i, n] : step) {
        Seq& s = seqs_[i];
        (void)w.kv->CommitComputed(SeqId(i), s.tokens, static_cast<int64_t>(s.tokens.size()));
        Emit(i);
      }
    }
    Reschedule(wi);
    TryStep(wi);
  }

  // A token out for request i (synthetic id: generated blocks are cached
  // under ids no prompt shares).
  void Emit(int64_t i) {
    Seq& s = seqs_[i];
    SimRequestResult& r = result_.requests[i];
    ++s.generated;
    s.tokens.push_back(static_cast<int32_t>(3 + (i * 7919 + s.generated) % 30000));
    s.last_token_s = now_;
    if (s.generated == 1) r.ttft_s = now_ - r.start_s;
    if (s.generated >= reqs_[i].output_len) Finish(i);
  }

  void TransferEnd(int64_t i) {
    Seq& s = seqs_[i];
    Worker& p = workers_[s.prefill];
    (void)p.kv->Free(SeqId(i));  // its blocks stay cached
    Done(s.prefill, s.prefill_load);
    window_.Leave(static_cast<uint64_t>(i));
    Worker& d = workers_[s.decode];
    (void)d.kv->CommitComputed(SeqId(i), s.tokens, static_cast<int64_t>(s.tokens.size()));
    const int prefill = s.prefill;
    Emit(i);
    if (!result_.requests[i].completed) {
      d.running.push_back(i);
      TryStep(s.decode);
    }
    TryStep(prefill);  // its freed blocks may let a waiting prompt in
    StartQueued();
  }

  void Finish(int64_t i) {
    Seq& s = seqs_[i];
    SimRequestResult& r = result_.requests[i];
    r.completed = true;
    r.e2e_s = now_ - r.start_s;
    r.tpot_s = s.generated > 1 ? (now_ - r.start_s - r.ttft_s) / static_cast<double>(s.generated - 1) : 0;
    result_.output_tokens += s.generated;
    Worker& d = workers_[s.decode];
    if (auto it = std::find(d.running.begin(), d.running.end(), i); it != d.running.end()) d.running.erase(it);
    (void)d.kv->Free(SeqId(i));
    d.promised_blocks -= s.promise;
    Done(s.decode, s.decode_load);
    window_.Forget(static_cast<uint64_t>(i));
    window_.DecodeRoom();
    ++ended_;
    --in_flight_;
    s.prompt = {};
    // The conversation's next turn builds on this one's tokens (kept until then).
    if (next_turn_[i] < 0) s.tokens = {};
    // Behind the requests already waiting for a slot, as tandem-bench's
    // dispatcher sends an arrival it holds before a turn that became ready.
    if (next_turn_[i] >= 0) ready_.push_back(next_turn_[i]);
    while (!ready_.empty() && (c_.concurrency <= 0 || in_flight_ < c_.concurrency)) {
      const int64_t j = ready_.front();
      ready_.pop_front();
      Send(j);
    }
    StartQueued();
  }

  // Each worker's KV events since the last beat reach the router.
  void Heartbeat() {
    for (Worker& w : workers_) {
      w.events_applied = router_.ApplyEvents(w.prefill ? v1::WORKER_ROLE_PREFILL : v1::WORKER_ROLE_DECODE,
                                             w.handle.id, "sim",
                                             ToProto(w.log->Since(w.events_applied, int64_t{1} << 20)));
    }
  }

  const SimConfig& c_;
  const std::vector<SimRequest>& reqs_;
  PrefillWindow window_;
  KvRouter router_;
  std::vector<Worker> workers_;
  std::vector<Seq> seqs_;
  SimResult result_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t next_order_ = 0;
  double now_ = 0;
  double last_advance_ = 0;
  int busy_ = 0;
  int64_t ended_ = 0;
  int64_t in_flight_ = 0;           // sent, not ended
  std::deque<int64_t> ready_;       // may be sent, waiting for a slot (under a cap)
  std::vector<int64_t> next_turn_;  // each request's next turn (-1: none)
};

}  // namespace

SimResult Simulate(const SimConfig& config, const std::vector<SimRequest>& requests) {
  return Simulator(config, requests).Run();
}

SimSummary Summarize(const SimResult& result, const Slo& slo) {
  SimSummary s;
  std::vector<double> ttft, tpot, e2e;
  for (const SimRequestResult& r : result.requests) {
    if (!r.completed) continue;
    ++s.completed;
    ttft.push_back(r.ttft_s * 1e3);
    e2e.push_back(r.e2e_s * 1e3);
    if (r.tpot_s > 0) tpot.push_back(r.tpot_s * 1e3);
    if (r.ttft_s * 1e3 <= slo.ttft_ms && r.tpot_s * 1e3 <= slo.tpot_ms) ++s.good;
  }
  s.ttft_ms = bench::Summarize(ttft);
  s.tpot_ms = bench::Summarize(tpot);
  s.e2e_ms = bench::Summarize(e2e);
  if (result.duration_s > 0) {
    s.output_tok_s = static_cast<double>(result.output_tokens) / result.duration_s;
    s.request_s = static_cast<double>(s.completed) / result.duration_s;
    s.goodput = static_cast<double>(s.good) / result.duration_s;
  }
  if (!result.requests.empty()) s.attainment = static_cast<double>(s.good) / static_cast<double>(result.requests.size());
  return s;
}

}  // namespace tandem::sim
