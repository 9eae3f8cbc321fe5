{
  description = "calibench: can a TensorRT INT8 calibration cache made on one GPU be reused on another?";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    crane.url = "github:ipetkov/crane";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, crane, rust-overlay, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ (import rust-overlay) ];
        };
        lib = pkgs.lib;
        # The toolchain of rust-toolchain.toml ("stable" with rustfmt and clippy), as the locked
        # rust-overlay revision resolves it: flake.lock pins the Rust version.
        craneLib = (crane.mkLib pkgs).overrideToolchain
          (p: p.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml);
        # Cargo sources plus what the crate embeds or its tests read (kernels, the shim, report
        # templates, fixtures, matrices).
        src = lib.cleanSourceWith {
          src = ./.;
          filter = path: type:
            (craneLib.filterCargoSources path type)
            || builtins.match ".*\\.(cu|cpp|h|html|css|js|tera|onnx|npy|npz|pb|cache|json|toml|txt|md|py|log|mjs|yml|yaml|sbatch)$" path != null;
        };
        commonArgs = {
          inherit src;
          pname = "calibench";
          version = "0.1.0";
          strictDeps = true;
          cargoExtraArgs = "--locked";
        };
        cargoArtifacts = craneLib.buildDepsOnly commonArgs;
        calibench = craneLib.buildPackage (commonArgs // {
          inherit cargoArtifacts;
          doCheck = false;
        });
        # The fixture scripts' Python (and the checkers the tests call when present).
        fixturePython = pkgs.python3.withPackages (ps: [ ps.numpy ps.onnx ps.onnxruntime ps.pillow ps.pyyaml ]);
        # TensorRT is unfree and not redistributable: nixpkgs' cudaPackages.tensorrt asks for the
        # tarball from NVIDIA (nix-store --add-fixed sha256 TensorRT-….tar.gz). The GPU driver's
        # libraries are found at run time (dlopen), as on any host.
        cuda = (import nixpkgs {
          inherit system;
          config = { allowUnfree = true; cudaSupport = true; };
        }).cudaPackages;
      in
      {
        packages = {
          default = calibench;
          calibench = calibench;
          calibench-tensorrt = craneLib.buildPackage (commonArgs // {
            inherit cargoArtifacts;
            pname = "calibench-tensorrt";
            cargoExtraArgs = "--locked --features tensorrt";
            doCheck = false;
            TENSORRT_INCLUDE_DIR = "${lib.getDev cuda.tensorrt}/include";
            CUDA_INCLUDE_DIR = "${lib.getDev cuda.cuda_cudart}/include:${lib.getDev cuda.cuda_nvcc}/include";
          });
        };

        checks = {
          build = calibench;
          clippy = craneLib.cargoClippy (commonArgs // {
            inherit cargoArtifacts;
            cargoClippyExtraArgs = "--all-targets -- -D warnings";
          });
          fmt = craneLib.cargoFmt { inherit src; };
          # The corpus (../shared) is not in the sandbox: those tests say they were skipped.
          tests = craneLib.cargoTest (commonArgs // {
            inherit cargoArtifacts;
            nativeBuildInputs = [ fixturePython ];
          });
        };

        devShells.default = craneLib.devShell {
          checks = self.checks.${system};
          packages = [ fixturePython pkgs.git ];
        };
      });
}
