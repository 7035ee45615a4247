// read_bench: how fast a blob comes out of shoald's Read RPC compared with
// reading its file directly, and what one small Read stream costs (containerd
// opens one per 32 KiB while unpacking). All measured side by side in one
// run, medians of --rounds.
#include <fcntl.h>
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "plugin/bench_util.h"
#include "plugin/file_util.h"
#include "plugin/server.h"

DEFINE_int64(size_mb, 1024, "blob size in MiB");
DEFINE_int32(rounds, 5, "measurements per method; the median is reported");
DEFINE_int32(small_reads, 20000, "32 KiB Read streams to time");
DEFINE_string(dir, "", "work directory (default: a new one under /tmp)");

namespace shoal::plugin {
namespace {

namespace cv1 = ::containerd::services::content::v1;

double DirectRead(const std::string& path, int64_t size) {
  int fd = open(path.c_str(), O_RDONLY);
  CHECK_GE(fd, 0);
  std::string buf(1 << 20, '\0');
  absl::Time start = absl::Now();
  int64_t total = 0;
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) total += n;
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  close(fd);
  CHECK_EQ(total, size);
  return size / secs / 1e9;
}

double RpcRead(cv1::Content::Stub& stub, const std::string& digest,
               int64_t size) {
  grpc::ClientContext ctx;
  cv1::ReadContentRequest req;
  req.set_digest(digest);
  absl::Time start = absl::Now();
  auto reader = stub.Read(&ctx, req);
  cv1::ReadContentResponse resp;
  int64_t total = 0;
  while (reader->Read(&resp)) total += resp.data().size();
  CHECK(reader->Finish().ok());
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  CHECK_EQ(total, size);
  return size / secs / 1e9;
}

// Microseconds per 32 KiB Read stream, opened and cancelled like containerd's
// ReaderAt does.
double SmallReads(cv1::Content::Stub& stub, const std::string& digest,
                  int64_t size, int count) {
  absl::Time start = absl::Now();
  for (int i = 0; i < count; ++i) {
    grpc::ClientContext ctx;
    cv1::ReadContentRequest req;
    req.set_digest(digest);
    req.set_offset((int64_t{i} * 32768) % (size - 32768));
    req.set_size(32768);
    auto reader = stub.Read(&ctx, req);
    cv1::ReadContentResponse resp;
    CHECK(reader->Read(&resp));
    ctx.TryCancel();
    reader->Finish();
  }
  return absl::ToDoubleMicroseconds(absl::Now() - start) / count;
}

double InfoCalls(cv1::Content::Stub& stub, const std::string& digest,
                 int count) {
  absl::Time start = absl::Now();
  for (int i = 0; i < count; ++i) {
    grpc::ClientContext ctx;
    cv1::InfoRequest req;
    req.set_digest(digest);
    cv1::InfoResponse resp;
    CHECK(stub.Info(&ctx, req, &resp).ok());
  }
  return absl::ToDoubleMicroseconds(absl::Now() - start) / count;
}

int Run() {
  std::string dir = FLAGS_dir;
  if (dir.empty()) {
    char tmpl[] = "/tmp/shoal-bench-XXXXXX";
    CHECK(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
  }
  auto server = ContentServer::Start(dir + "/c.sock", dir + "/root");
  CHECK(server.ok()) << server.status();
  int64_t size = FLAGS_size_mb << 20;
  std::string digest =
      WriteRandomBlob((*server)->store(), "bench/1/layer", size, 42);
  sync();  // Let writeback finish first: it competes for the CPUs here.
  std::string path = absl::StrCat(dir, "/root/blobs/sha256/", digest.substr(7));

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  auto stub = cv1::Content::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("unix:", dir, "/c.sock"),
                                grpc::InsecureChannelCredentials(), args));

  std::vector<double> direct, rpc;
  DirectRead(path, size);  // Warm the page cache.
  for (int i = 0; i < FLAGS_rounds; ++i) {
    direct.push_back(DirectRead(path, size));
    rpc.push_back(RpcRead(*stub, digest, size));
  }
  double small_us = SmallReads(*stub, digest, size, FLAGS_small_reads);
  double info_us = InfoCalls(*stub, digest, FLAGS_small_reads);

  printf("blob                    %lld MiB (page cache warm)\n",
         static_cast<long long>(FLAGS_size_mb));
  printf("direct file read        %.2f GB/s (median of %d)\n", Median(direct),
         FLAGS_rounds);
  printf("Read RPC, one stream    %.2f GB/s (median of %d)\n", Median(rpc),
         FLAGS_rounds);
  printf("ratio rpc/direct        %.2f\n", Median(rpc) / Median(direct));
  printf("32 KiB Read stream      %.1f us each (%d streams)\n", small_us,
         FLAGS_small_reads);
  printf("Info RPC (unary)        %.1f us each (floor of any RPC here)\n",
         info_us);
  (*server)->Shutdown(absl::ZeroDuration());
  server->reset();
  if (FLAGS_dir.empty()) RemoveTree(dir).IgnoreError();
  return 0;
}

}  // namespace
}  // namespace shoal::plugin

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  return shoal::plugin::Run();
}
