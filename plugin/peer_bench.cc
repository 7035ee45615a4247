// peer_bench: a blob streamed peer to peer over loopback TCP and committed
// with full SHA-256 verification, against the two ceilings measured in the
// same run: raw TCP loopback throughput and `openssl speed -evp sha256`.
// Stores live under --dir (default /dev/shm, so the VM's disk write-back does
// not hide the transfer; pass a disk path to include it).
#include <arpa/inet.h>
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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

// GB/s of one fetch + verified commit.
double PeerFetch(pv1::Peer::Stub& stub, BlobStore& store,
                 const std::string& digest, int64_t size, int round) {
  absl::Time start = absl::Now();
  auto w = *store.OpenIngest(absl::StrCat("fetch-", round), size);
  auto got = FetchBlobInto(stub, digest, size, *w, absl::Minutes(5));
  CHECK(got.ok()) << got.status();
  CHECK(w->Commit(size, digest).ok());
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  CHECK(store.Delete(digest).ok());
  return size / secs / 1e9;
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

int Run() {
  int64_t size = FLAGS_size_mb << 20;
  std::string base = absl::StrCat(FLAGS_dir, "/shoal-peer-bench-", getpid());
  auto serving = *BlobStore::Open(base + "/serving");
  auto fetching = *BlobStore::Open(base + "/fetching");
  std::string digest = WriteRandomBlob(*serving, "bench-seed", size, 7);
  sync();

  PeerService service(serving.get(), PeerServiceOptions{});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  auto stub = pv1::Peer::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));

  std::vector<double> peer, tcp, sha;
  for (int i = 0; i < FLAGS_rounds; ++i) {
    peer.push_back(PeerFetch(*stub, *fetching, digest, size, i));
    tcp.push_back(RawTcp(size));
    sha.push_back(OpensslSha256());
  }
  double ceiling = std::min(Median(tcp), Median(sha));
  printf("blob                       %lld MiB, stores under %s\n",
         static_cast<long long>(FLAGS_size_mb), FLAGS_dir.c_str());
  printf("peer fetch + verified commit  %.2f GB/s (median of %d)\n",
         Median(peer), FLAGS_rounds);
  printf("raw TCP loopback              %.2f GB/s\n", Median(tcp));
  printf("openssl speed -evp sha256     %.2f GB/s\n", Median(sha));
  printf("peer / lower ceiling          %.2f\n", Median(peer) / ceiling);
  server->Shutdown();
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
