// The C++ recorder on weights a test wrote to files: what fevo::record::recorder<float> with
// fevo::cpu::par writes for them, for the byte-for-byte comparison with fevo.Recorder
// (test_recorder.py). It reads a script, one command a line:
//   out DIR | tau HEXFLOAT | series 0|1 | tensorboard 0|1 | compact BYTES
//   layer N C H W NAME         (the rest of the line is the name; OIHW, contiguous)
//   start STEP FILE | record STEP FILE   (FILE: every layer's float32 weights, in order)
//   close
//   record_reference SCRIPT
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fevo/cpu.hpp>
#include <fevo/record/recorder.hpp>

namespace {

struct layer {
  std::string name;
  long long n, c, h, w;
  std::vector<float> live;
};

void load(const std::string& file, std::vector<layer>& layers) {
  std::ifstream in(file, std::ios::binary);
  for (auto& l : layers)
    if (!in.read(reinterpret_cast<char*>(l.live.data()), static_cast<std::streamsize>(l.live.size() * sizeof(float))))
      throw std::runtime_error("short weights file " + file);
  if (in.peek() != EOF) throw std::runtime_error("weights file " + file + " is too long");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCRIPT\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream script(argv[1]);
    fevo::record::recorder_options o;
    std::vector<layer> layers;
    std::unique_ptr<fevo::record::recorder<float>> rec;
    std::string line;
    while (std::getline(script, line)) {
      std::istringstream ls(line);
      std::string cmd;
      ls >> cmd;
      if (cmd == "out") ls >> o.out_dir;
      else if (cmd == "tau") {
        std::string t;
        ls >> t;
        o.tau = std::strtod(t.c_str(), nullptr);
      } else if (cmd == "series") ls >> o.per_filter_series;
      else if (cmd == "tensorboard") ls >> o.tensorboard;
      else if (cmd == "compact") ls >> o.journal_compact_bytes;
      else if (cmd == "layer") {
        layer l;
        ls >> l.n >> l.c >> l.h >> l.w;
        ls.get();
        std::getline(ls, l.name);
        l.live.resize(static_cast<std::size_t>(l.n * l.c * l.h * l.w));
        layers.push_back(std::move(l));
      } else if (cmd == "start" || cmd == "record") {
        std::int64_t step;
        std::string file;
        ls >> step >> file;
        load(file, layers);
        if (cmd == "start") {
          rec = std::make_unique<fevo::record::recorder<float>>(o, fevo::cpu::par);
          for (auto& l : layers) rec->add_layer(l.name, fevo::oihw(l.live.data(), l.n, l.c, l.h, l.w));
          rec->start(step);
        } else {
          rec->record(step);
        }
      } else if (cmd == "close") {
        rec->close();
      } else if (!cmd.empty()) {
        throw std::runtime_error("unknown command '" + cmd + "'");
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "record_reference: %s\n", e.what());
    return 1;
  }
}
