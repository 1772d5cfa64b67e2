//! The Docker engine on this machine, through its CLI: images made here (no registry), and the
//! cleanup that removes what a test made, also when it fails.

use std::path::Path;
use std::process::Command;

use wolf_rs::runners::docker::LABEL;

/// `docker <args>`, which must succeed; its trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Containers carrying the runner's session label (apps a host started).
pub fn labelled() -> Vec<String> {
    docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("label={LABEL}")]).lines().map(str::to_owned).collect()
}

pub fn remove_labelled() {
    for id in labelled() {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
}

pub fn running(id: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// A one-binary image made here: busybox-static, `sleep 600` as its command.
pub fn build_app_image(dir: &Path, tag: &str) {
    build_image_with(dir, tag, &[]);
}

/// As [`build_app_image`], with these programs of this machine in it at the same paths, each with
/// the shared libraries `ldd` names (X and Pulse clients, without a base image or a registry).
pub fn build_image_with(dir: &Path, tag: &str, programs: &[&str]) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static (scripts/deps.sh installs it)");
    // What the host's device-node exec and the tests run in the container.
    for applet in ["sh", "sleep", "cat", "echo", "ls", "mkdir", "rm", "dirname", "mknod"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for program in programs {
        let path = which(program);
        let ldd = Command::new("ldd").arg(&path).output().expect("ldd");
        let libs = String::from_utf8_lossy(&ldd.stdout).into_owned();
        // "libX.so.6 => /lib/.../libX.so.6 (0x...)" and the loader "/lib64/ld-linux-x86-64.so.2 (0x...)".
        let files = libs.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(str::to_owned));
        for file in std::iter::once(path.clone()).chain(files) {
            let inside = root.join(file.trim_start_matches('/'));
            std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
            std::fs::copy(&file, &inside).unwrap_or_else(|e| panic!("copying {file}: {e}"));
        }
    }
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(ok.success());
    docker(&["import", "--change", "CMD [\"/bin/sleep\", \"600\"]", tar.to_str().unwrap(), tag]);
}

/// The full path of a program on PATH.
fn which(program: &str) -> String {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed (scripts/deps.sh --test installs it)"))
        .display()
        .to_string()
}

/// Removes these containers and images and every container with the runner's label when dropped.
pub struct DockerCleanup {
    pub containers: Vec<String>,
    pub images: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        remove_labelled();
        for i in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}
