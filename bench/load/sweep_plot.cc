#include "bench/load/sweep_plot.h"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace tandem::bench {
namespace {

std::string Value(const LatencySummary& s, double v) {
  return s.count == 0 ? "NaN" : absl::StrFormat("%.6g", v);
}

// gnuplot strings are single-quoted; a quote is doubled inside them.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::string SweepPlotScript(const std::vector<SweepPoint>& points, const std::string& png_path) {
  std::string s = "# tandem-bench sweep: latency percentiles vs achieved output throughput.\n";
  s += "$data << EOD\n# label tok_per_s ttft_p50 ttft_p90 ttft_p99 tpot_p50 tpot_p90 tpot_p99 e2e_p50 e2e_p90 e2e_p99\n";
  for (const SweepPoint& p : points) {
    const BenchReport& r = p.report;
    s += absl::StrFormat("\"%s\" %.6g", p.label, r.output_throughput);
    for (const LatencySummary* m : {&r.ttft_ms, &r.tpot_ms, &r.e2el_ms}) {
      s += absl::StrCat(" ", Value(*m, m->p50), " ", Value(*m, m->p90), " ", Value(*m, m->p99));
    }
    s += "\n";
  }
  s += "EOD\n";
  s += absl::StrCat("set terminal pngcairo size 1500,500\nset output ", Quote(png_path), "\n");
  s += "set multiplot layout 1,3 title 'tandem-bench sweep'\n"
       "set xlabel 'achieved output throughput (tok/s)'\nset ylabel 'ms'\nset grid\nset key top left\n";
  const char* titles[] = {"TTFT", "TPOT", "E2E latency"};
  for (int panel = 0; panel < 3; ++panel) {
    const int col = 3 + 3 * panel;  // columns: 1 label, 2 throughput, then 3 per metric
    s += absl::StrFormat(
        "set title '%s'\nplot $data using 2:%d with linespoints title 'p50', "
        "'' using 2:%d with linespoints title 'p90', '' using 2:%d with linespoints title 'p99'\n",
        titles[panel], col, col + 1, col + 2);
  }
  s += "unset multiplot\n";
  return s;
}

absl::StatusOr<std::string> FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path == nullptr ? "" : path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::NotFoundError(absl::StrCat(name, " not found on PATH"));
}

absl::Status WriteSweepPlot(const std::vector<SweepPoint>& points, const std::string& png_path) {
  auto gnuplot = FindOnPath("gnuplot");
  if (!gnuplot.ok()) {
    return absl::FailedPreconditionError(
        "gnuplot is not on PATH: install gnuplot-nox (scripts/install_deps.sh) to get the sweep plot");
  }
  std::string stem = png_path;
  if (stem.size() > 4 && stem.ends_with(".png")) stem.resize(stem.size() - 4);
  const std::string script_path = stem + ".gp";
  {
    std::ofstream out(script_path);
    out << SweepPlotScript(points, png_path);
    if (!out.good()) return absl::InternalError(absl::StrCat("cannot write ", script_path));
  }
  std::remove(png_path.c_str());  // so a stale PNG cannot pass for this run's
  const std::string arg0 = "gnuplot";
  char* argv[] = {const_cast<char*>(arg0.c_str()), const_cast<char*>(script_path.c_str()), nullptr};
  pid_t pid;
  if (int err = posix_spawn(&pid, gnuplot->c_str(), nullptr, nullptr, argv, environ); err != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", *gnuplot, ": ", std::strerror(err)));
  }
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  struct stat st;
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || stat(png_path.c_str(), &st) != 0 || st.st_size == 0) {
    return absl::InternalError(absl::StrCat("gnuplot ", script_path, " did not write ", png_path));
  }
  return absl::OkStatus();
}

}  // namespace tandem::bench
