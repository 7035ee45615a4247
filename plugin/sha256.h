// Incremental SHA-256 over OpenSSL's EVP interface, and the "sha256:<hex>"
// digest strings containerd and OCI use. Not thread-safe; one per stream.
#ifndef SHOAL_PLUGIN_SHA256_H_
#define SHOAL_PLUGIN_SHA256_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

struct evp_md_ctx_st;

namespace shoal::plugin {

inline constexpr absl::string_view kSha256Prefix = "sha256:";

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256& other);
  Sha256& operator=(const Sha256& other);

  void Update(absl::string_view data);
  // Digest of everything hashed so far, as "sha256:<64 hex>". Does not end
  // the computation: more data may follow.
  std::string Digest() const;
  void Reset();

 private:
  struct CtxDeleter {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, CtxDeleter> ctx_;
};

// Digest of `data` as "sha256:<hex>".
std::string Sha256Digest(absl::string_view data);

// OK when `digest` is "sha256:" followed by 64 lowercase hex digits; otherwise
// INVALID_ARGUMENT naming the problem. Other algorithms (sha384, sha512) are
// valid OCI digests, but Shoal's store holds sha256 blobs only.
absl::Status ValidateDigest(absl::string_view digest);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_SHA256_H_
