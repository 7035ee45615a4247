#include "plugin/sha256.h"

#include <glog/logging.h>
#include <openssl/evp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace shoal::plugin {

void Sha256::CtxDeleter::operator()(evp_md_ctx_st* ctx) const {
  EVP_MD_CTX_free(ctx);
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  CHECK(ctx_ != nullptr) << "sha256: out of memory";
  Reset();
}

Sha256::~Sha256() = default;

Sha256::Sha256(const Sha256& other) : ctx_(EVP_MD_CTX_new()) {
  CHECK(ctx_ != nullptr) << "sha256: out of memory";
  CHECK_EQ(EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()), 1);
}

Sha256& Sha256::operator=(const Sha256& other) {
  if (this != &other) {
    CHECK_EQ(EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()), 1);
  }
  return *this;
}

void Sha256::Update(absl::string_view data) {
  CHECK_EQ(EVP_DigestUpdate(ctx_.get(), data.data(), data.size()), 1);
}

std::string Sha256::Digest() const {
  Sha256 copy(*this);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  CHECK_EQ(EVP_DigestFinal_ex(copy.ctx_.get(), md, &len), 1);
  return absl::StrCat(kSha256Prefix,
                      absl::BytesToHexString(absl::string_view(
                          reinterpret_cast<const char*>(md), len)));
}

void Sha256::Reset() {
  CHECK_EQ(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr), 1);
}

std::string Sha256Digest(absl::string_view data) {
  Sha256 hash;
  hash.Update(data);
  return hash.Digest();
}

absl::Status ValidateDigest(absl::string_view digest) {
  if (!absl::StartsWith(digest, kSha256Prefix)) {
    if (digest.find(':') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed digest \"", absl::CHexEscape(digest.substr(0, 80)),
          "\": missing algorithm prefix"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported digest algorithm in \"",
        absl::CHexEscape(digest.substr(0, 80)), "\": only sha256 is stored"));
  }
  absl::string_view hex = digest.substr(kSha256Prefix.size());
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed digest: sha256 needs 64 hex digits, got ", hex.size()));
  }
  for (char c : hex) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) {
      return absl::InvalidArgumentError(
          "malformed digest: sha256 hex must be lowercase 0-9a-f");
    }
  }
  return absl::OkStatus();
}

}  // namespace shoal::plugin
