"""Generates C++ protobuf and gRPC code with the system protoc.

Debian's protobuf-compiler and protobuf-compiler-grpc are used as installed;
Bazel 4's proto rules would want to build protoc from source, which needs the
network. The .proto file is first copied to `out` inside this package, with
gogoproto options removed when `strip_gogo` is set: protoc's open-source C++
generator rejects `import weak`, and the options only matter to Go. The wire
format does not change.
"""

# Deletes `import weak` lines, file/message `option (gogoproto...)` and
# `option (containerd.plugin...)` lines, and inline `[(gogoproto...)]` field
# options (which never mix with other options in containerd 1.6's protos).
_STRIP_GOGO = (
    "sed -e '/^import weak /d' " +
    "-e '/^[[:space:]]*option (gogoproto\\./d' " +
    "-e '/^[[:space:]]*option (containerd\\.plugin\\./d' " +
    "-e 's/[[:space:]]*\\[(gogoproto\\.[^]]*\\]//g'"
)

def system_cc_proto_library(name, src, out, grpc = False, strip_gogo = False, deps = [], visibility = None):
    """Declares cc_library `name` generated from the .proto `src`.

    Args:
      name: the cc_library's name.
      src: label of the .proto file.
      out: path of the copied .proto inside this package, without ".proto";
        it is also the import path that generated headers are included by.
      grpc: also generate gRPC service code.
      strip_gogo: remove gogoproto options first.
      deps: cc_library deps of the generated code (other generated protos).
      visibility: of the cc_library.
    """
    copy = out + ".proto"
    hdrs = [out + ".pb.h"]
    srcs = [out + ".pb.cc"]
    if grpc:
        hdrs.append(out + ".grpc.pb.h")
        srcs.append(out + ".grpc.pb.cc")
    filter = _STRIP_GOGO if strip_gogo else "cat"
    native.genrule(
        name = name + "_gen",
        srcs = [src] + [d + "_proto_files" for d in deps],
        outs = [copy] + hdrs + srcs,
        cmd = " && ".join([
            filter + " $(location " + src + ") > $(RULEDIR)/" + copy,
            "/usr/bin/protoc -I$(RULEDIR) -I$(GENDIR) -I/usr/include " +
            "--cpp_out=$(RULEDIR) " +
            ("--grpc_out=$(RULEDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin " if grpc else "") +
            "$(RULEDIR)/" + copy,
        ]),
    )
    native.filegroup(
        name = name + "_proto_files",
        srcs = [copy],
        visibility = visibility,
    )
    native.cc_library(
        name = name,
        srcs = srcs,
        hdrs = hdrs,
        includes = ["."],
        deps = deps + ["//third_party/protobuf"] + (["//third_party/grpc"] if grpc else []),
        visibility = visibility,
    )
