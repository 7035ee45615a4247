// peer_bench: a blob streamed peer to peer over loopback TCP and committed
// with full SHA-256 verification, against the two ceilings measured in the
// same run: raw TCP loopback throughput and `openssl speed -evp sha256`; and,
// for reference, writing a new file of the same size next to the stores.
// Stores live under --dir (default /dev/shm, so the VM's disk write-back does
// not hide the transfer; pass a disk path to include it).
//
// The serving side runs in a child process, so the CPU time each side spends
// per GB is measured apart: on one small machine both ends share the same
// cores, and the receiver's CPU per GB says what a node with its cores to
// itself could verify.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "plugin/bench_util.h"
#include "plugin/file_util.h"
#include "plugin/peer_client.h"
#include "plugin/peer_service.h"

DEFINE_int64(size_mb, 1024, "blob size in MiB");
DEFINE_int32(rounds, 3, "transfers per measure; medians are reported");
DEFINE_string(dir, "/dev/shm", "where the two stores live");

namespace shoal::plugin {
namespace {

namespace pv1 = ::shoal::peer::v1;

double CpuSeconds(const rusage& r) {
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec +
         r.ru_stime.tv_usec / 1e6;
}

double SelfCpuSeconds() {
  rusage r;
  getrusage(RUSAGE_SELF, &r);
  return CpuSeconds(r);
}

struct FetchResult {
  double gbps;
  double cpu_seconds;  // This process's, i.e. the receiver's.
};

// One fetch + verified commit.
FetchResult PeerFetch(pv1::Peer::Stub& stub, BlobStore& store,
                      const std::string& digest, int64_t size, int round) {
  double cpu0 = SelfCpuSeconds();
  absl::Time start = absl::Now();
  auto w = *store.OpenIngest(absl::StrCat("fetch-", round), size);
  auto got = FetchBlobInto(stub, digest, size, *w, absl::Minutes(5));
  CHECK(got.ok()) << got.status();
  CHECK(w->Commit(size, digest).ok());
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  double cpu = SelfCpuSeconds() - cpu0;
  CHECK(store.Delete(digest).ok());
  return {size / secs / 1e9, cpu};
}

// Child process: serves `store` on 127.0.0.1, writes the port to `port_fd`,
// and exits when `stop_fd` reaches end of file. gRPC is first initialised
// here, after the fork.
[[noreturn]] void ServeChild(const std::string& root, int port_fd,
                             int stop_fd) {
  auto store = *BlobStore::Open(root);
  PeerService service(store.get(), PeerServiceOptions{});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  CHECK(server != nullptr);
  CHECK_EQ(write(port_fd, &port, sizeof(port)), sizeof(port));
  char c;
  while (read(stop_fd, &c, 1) > 0) {
  }
  server->Shutdown();
  _exit(0);
}

// GB/s of `size` bytes over one loopback TCP connection, 1 MiB writes.
double RawTcp(int64_t size) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  listen(listener, 1);
  std::thread sender([&] {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    std::string buf(1 << 20, 'x');
    for (int64_t sent = 0; sent < size;) {
      ssize_t n =
          write(fd, buf.data(), std::min<int64_t>(buf.size(), size - sent));
      CHECK_GT(n, 0);
      sent += n;
    }
    close(fd);
  });
  int fd = accept(listener, nullptr, nullptr);
  absl::Time start = absl::Now();
  std::string buf(1 << 20, '\0');
  int64_t got = 0;
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) got += n;
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  sender.join();
  close(fd);
  close(listener);
  CHECK_EQ(got, size);
  return size / secs / 1e9;
}

// GB/s of writing `size` bytes, 1 MiB per write(2), into a new file under
// `dir`, which is then removed: what storing any new blob of this size costs
// here, before any network or hashing. On this project's VMs, memory the
// guest freed is handed back to the host, so filling new tmpfs pages can be
// several times slower than rewriting old ones; this measures that too.
double NewFileWrite(const std::string& dir, int64_t size) {
  std::string path = absl::StrCat(dir, "/new-file-write");
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  CHECK_GE(fd, 0) << path;
  std::string buf(1 << 20, 'x');
  absl::Time start = absl::Now();
  for (int64_t done = 0; done < size;) {
    ssize_t n =
        write(fd, buf.data(), std::min<int64_t>(buf.size(), size - done));
    CHECK_GT(n, 0);
    done += n;
  }
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  close(fd);
  unlink(path.c_str());
  return size / secs / 1e9;
}

// GB/s from `openssl speed -evp sha256` on 1 MiB blocks.
double OpensslSha256() {
  FILE* p = popen(
      "openssl speed -evp sha256 -seconds 2 -bytes 1048576 2>/dev/null", "r");
  CHECK(p != nullptr);
  char line[512];
  double kbps = 0;
  while (fgets(line, sizeof(line), p) != nullptr) {
    sscanf(line, "sha256 %lfk", &kbps);
  }
  pclose(p);
  return kbps * 1000 / 1e9;
}

// Removes the stores of earlier runs that died (a failed CHECK cannot clean
// up): left in /dev/shm they hold gigabytes of memory and slow this run.
void RemoveStaleStores(const std::string& dir) {
  constexpr absl::string_view kPrefix = "shoal-peer-bench-";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    absl::string_view name = e->d_name;
    int pid = 0;
    if (!absl::ConsumePrefix(&name, kPrefix) || !absl::SimpleAtoi(name, &pid) ||
        kill(pid, 0) == 0 || errno != ESRCH) {
      continue;
    }
    std::string path = absl::StrCat(dir, "/", e->d_name);
    fprintf(stderr, "removing stale %s\n", path.c_str());
    RemoveTree(path).IgnoreError();
  }
  closedir(d);
}

int Run() {
  int64_t size = FLAGS_size_mb << 20;
  RemoveStaleStores(FLAGS_dir);
  std::string base = absl::StrCat(FLAGS_dir, "/shoal-peer-bench-", getpid());
  auto serving = *BlobStore::Open(base + "/serving");
  auto fetching = *BlobStore::Open(base + "/fetching");
  std::string digest = WriteRandomBlob(*serving, "bench-seed", size, 7);
  serving.reset();
  sync();

  int port_pipe[2], stop_pipe[2];
  CHECK_EQ(pipe(port_pipe), 0);
  CHECK_EQ(pipe(stop_pipe), 0);
  pid_t child = fork();
  CHECK_GE(child, 0);
  if (child == 0) {
    close(port_pipe[0]);
    close(stop_pipe[1]);
    ServeChild(base + "/serving", port_pipe[1], stop_pipe[0]);
  }
  close(port_pipe[1]);
  close(stop_pipe[0]);
  int port = 0;
  CHECK_EQ(read(port_pipe[0], &port, sizeof(port)), sizeof(port));
  auto stub = pv1::Peer::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));

  std::vector<double> peer, receiver_cpu, tcp, sha, new_file;
  for (int i = 0; i < FLAGS_rounds; ++i) {
    FetchResult r = PeerFetch(*stub, *fetching, digest, size, i);
    peer.push_back(r.gbps);
    receiver_cpu.push_back(r.cpu_seconds / (size / 1e9));
    tcp.push_back(RawTcp(size));
    sha.push_back(OpensslSha256());
    new_file.push_back(NewFileWrite(base, size));
  }
  close(stop_pipe[1]);
  rusage child_usage;
  int status = 0;
  CHECK_EQ(wait4(child, &status, 0, &child_usage), child);
  double sender_cpu = CpuSeconds(child_usage) / (FLAGS_rounds * size / 1e9);
  double ceiling = std::min(Median(tcp), Median(sha));
  printf("blob                       %lld MiB, stores under %s\n",
         static_cast<long long>(FLAGS_size_mb), FLAGS_dir.c_str());
  printf("peer fetch + verified commit  %.2f GB/s (median of %d)\n",
         Median(peer), FLAGS_rounds);
  printf("raw TCP loopback              %.2f GB/s\n", Median(tcp));
  printf("openssl speed -evp sha256     %.2f GB/s\n", Median(sha));
  printf("peer / lower ceiling          %.2f\n", Median(peer) / ceiling);
  printf("new file write, same dir      %.2f GB/s (peer / this: %.2f)\n",
         Median(new_file), Median(peer) / Median(new_file));
  printf(
      "receiver CPU                  %.2f s per GB (median; hashing alone "
      "is %.2f)\n",
      Median(receiver_cpu), 1 / Median(sha));
  printf("sender CPU                    %.2f s per GB (mean, child process)\n",
         sender_cpu);
  RemoveTree(base).IgnoreError();
  return 0;
}

}  // namespace
}  // namespace shoal::plugin

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  return shoal::plugin::Run();
}
