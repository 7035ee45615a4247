// shoal_health_probe: asks a gRPC server on a unix socket for its
// grpc.health.v1 status. Exits 0 when SERVING, 1 otherwise, printing why;
// for systemd ExecStartPost, Kubernetes exec probes and tests.
#include <gflags/gflags.h>
#include <grpcpp/grpcpp.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"

DEFINE_string(socket, "/run/shoal/content.sock", "unix socket to probe");
DEFINE_string(service, "", "service name to ask about; empty for the server");
DEFINE_int32(timeout_ms, 1000, "deadline for the check");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  auto channel = grpc::CreateChannel(absl::StrCat("unix:", FLAGS_socket),
                                     grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(FLAGS_timeout_ms));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(FLAGS_service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) {
    std::cerr << "unhealthy: " << FLAGS_socket << ": " << st.error_message()
              << " (code " << st.error_code() << ")\n";
    return 1;
  }
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::cerr << "not serving: "
              << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                     resp.status())
              << "\n";
    return 1;
  }
  std::cout << "SERVING\n";
  return 0;
}
