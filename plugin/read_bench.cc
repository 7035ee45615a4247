// read_bench: how fast a blob comes out of shoald's Read RPC compared with
// reading its file directly, and what one small Read stream costs (containerd
// opens one per 32 KiB while unpacking), over shoald's HTTP/2 transport and
// over gRPC C++'s server. All measured side by side in one run, medians of
// --rounds.
#include <fcntl.h>
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/generic/generic_stub.h>
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

// The same read with the response messages taken as raw gRPC byte buffers,
// not parsed into protobufs: what the transport delivers when the client
// does no copy of its own. The count includes each message's few header
// bytes.
double RawRpcRead(const std::shared_ptr<grpc::Channel>& channel,
                  const std::string& digest, int64_t size) {
  cv1::ReadContentRequest req;
  req.set_digest(digest);
  std::string serialized = req.SerializeAsString();
  grpc::Slice slice(serialized);
  grpc::ByteBuffer request(&slice, 1), reply;
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  void* tag;
  bool ok;
  absl::Time start = absl::Now();
  auto call = stub.PrepareCall(
      &ctx, "/containerd.services.content.v1.Content/Read", &cq);
  call->StartCall(nullptr);
  CHECK(cq.Next(&tag, &ok) && ok);
  call->Write(request, nullptr);
  CHECK(cq.Next(&tag, &ok) && ok);
  call->WritesDone(nullptr);
  CHECK(cq.Next(&tag, &ok) && ok);
  int64_t total = 0;
  while (true) {
    call->Read(&reply, nullptr);
    CHECK(cq.Next(&tag, &ok));
    if (!ok) break;
    total += static_cast<int64_t>(reply.Length());
  }
  grpc::Status st;
  call->Finish(&st, nullptr);
  CHECK(cq.Next(&tag, &ok));
  CHECK(st.ok()) << st.error_message();
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  CHECK_GE(total, size);
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

// One transport's figures.
struct Figures {
  std::vector<double> rpc_gbps;
  std::vector<double> raw_gbps;
  double small_us = 0;
  double info_us = 0;
};

std::shared_ptr<grpc::Channel> Connect(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(absl::StrCat("unix:", socket),
                                   grpc::InsecureChannelCredentials(), args);
}

int Run() {
  std::string dir = FLAGS_dir;
  if (dir.empty()) {
    char tmpl[] = "/tmp/shoal-bench-XXXXXX";
    CHECK(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
  }
  // The two transports serve one store side by side.
  auto store = BlobStore::Open(dir + "/root");
  CHECK(store.ok()) << store.status();
  auto h2 = ContentServer::Start(dir + "/h2.sock", store->get(), nullptr,
                                 nullptr, nullptr, ContentTransport::kHttp2);
  CHECK(h2.ok()) << h2.status();
  auto grpc = ContentServer::Start(dir + "/grpc.sock", store->get(), nullptr,
                                   nullptr, nullptr, ContentTransport::kGrpc);
  CHECK(grpc.ok()) << grpc.status();
  int64_t size = FLAGS_size_mb << 20;
  std::string digest = WriteRandomBlob(**store, "bench/1/layer", size, 42);
  sync();  // Let writeback finish first: it competes for the CPUs here.
  std::string path = absl::StrCat(dir, "/root/blobs/sha256/", digest.substr(7));

  auto h2_channel = Connect(dir + "/h2.sock");
  auto grpc_channel = Connect(dir + "/grpc.sock");
  auto h2_stub = cv1::Content::NewStub(h2_channel);
  auto grpc_stub = cv1::Content::NewStub(grpc_channel);
  std::vector<double> direct;
  Figures f_h2, f_grpc;
  DirectRead(path, size);  // Warm the page cache.
  for (int i = 0; i < FLAGS_rounds; ++i) {
    direct.push_back(DirectRead(path, size));
    f_h2.rpc_gbps.push_back(RpcRead(*h2_stub, digest, size));
    f_grpc.rpc_gbps.push_back(RpcRead(*grpc_stub, digest, size));
    f_h2.raw_gbps.push_back(RawRpcRead(h2_channel, digest, size));
    f_grpc.raw_gbps.push_back(RawRpcRead(grpc_channel, digest, size));
  }
  // Small calls alternate in halves, so drift on a shared machine hits both.
  for (int half = 0; half < 2; ++half) {
    f_h2.small_us +=
        SmallReads(*h2_stub, digest, size, FLAGS_small_reads / 2) / 2;
    f_grpc.small_us +=
        SmallReads(*grpc_stub, digest, size, FLAGS_small_reads / 2) / 2;
    f_h2.info_us += InfoCalls(*h2_stub, digest, FLAGS_small_reads / 2) / 2;
    f_grpc.info_us += InfoCalls(*grpc_stub, digest, FLAGS_small_reads / 2) / 2;
  }

  printf("blob %lld MiB (page cache warm), medians of %d, %d small calls\n",
         static_cast<long long>(FLAGS_size_mb), FLAGS_rounds,
         FLAGS_small_reads);
  printf("direct file read         %.2f GB/s\n", Median(direct));
  printf("%-24s %12s %12s %8s\n", "", "h2 (shoald)", "gRPC C++", "ratio");
  printf("%-24s %9.2f GB/s %7.2f GB/s %8.2f\n", "Read RPC, one stream",
         Median(f_h2.rpc_gbps), Median(f_grpc.rpc_gbps),
         Median(f_h2.rpc_gbps) / Median(f_grpc.rpc_gbps));
  printf("%-24s %9.2f GB/s %7.2f GB/s %8.2f\n", "  same, raw (no parse)",
         Median(f_h2.raw_gbps), Median(f_grpc.raw_gbps),
         Median(f_h2.raw_gbps) / Median(f_grpc.raw_gbps));
  printf("%-24s %9.1f us %9.1f us %8.2f\n", "32 KiB Read stream", f_h2.small_us,
         f_grpc.small_us, f_h2.small_us / f_grpc.small_us);
  printf("%-24s %9.1f us %9.1f us %8.2f\n", "Info RPC (unary)", f_h2.info_us,
         f_grpc.info_us, f_h2.info_us / f_grpc.info_us);
  (*h2)->Shutdown(absl::ZeroDuration());
  (*grpc)->Shutdown(absl::ZeroDuration());
  h2->reset();
  grpc->reset();
  store->reset();
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
