//! The docker runner: a container per session from the app's image, with its env, mounts and
//! devices, labelled `wolf-rs.session=<id>` so a restarted host can find it and remove the ones no
//! session knows. The Docker Engine API over the unix socket, through bollard.
//!
//! Gamepads made while a container runs reach it as device nodes the host makes in a folder
//! mounted at its `/dev/input` (`Runners::device_nodes`): every container may use input devices
//! (`c 13:* rmw`) but may not make device nodes itself (no `CAP_MKNOD`), so it opens only the nodes
//! the host made for it, never the host's keyboard or another session's pad.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};
use tokio::sync::OnceCell;

use super::{RunnerError, RunnerHandle};

/// The label on every container the host starts.
pub const LABEL: &str = "wolf-rs.session";

/// Each Docker API call is bounded.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Linux input devices (evdev, joydev): the character major the kernel gives them.
pub const INPUT_MAJOR: u32 = 13;

/// The Docker Engine call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Connect,
    Negotiate,
    Create,
    Start,
    List,
    Inspect(String),
    Remove(String),
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Connect => write!(f, "connecting to the Docker engine"),
            Call::Negotiate => write!(f, "negotiating the API version"),
            Call::Create => write!(f, "creating the container"),
            Call::Start => write!(f, "starting the container"),
            Call::List => write!(f, "listing containers"),
            Call::Inspect(id) => write!(f, "inspecting {id}"),
            Call::Remove(id) => write!(f, "removing {id}"),
        }
    }
}

/// How a Docker Engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Engine(#[from] bollard::errors::Error),
    #[error("no answer from the Docker engine in {0:?}")]
    NoAnswer(Duration),
}

fn failed(call: Call, e: impl Into<DockerError>) -> RunnerError {
    RunnerError::Docker { call, source: e.into() }
}

pub struct DockerRunner {
    client: OnceCell<Docker>,
}

async fn bounded<T>(
    call: Call,
    f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, RunnerError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(call, e)),
        Err(_) => Err(failed(call, DockerError::NoAnswer(CALL_TIMEOUT))),
    }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl Default for DockerRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerRunner {
    pub fn new() -> DockerRunner {
        DockerRunner { client: OnceCell::new() }
    }

    /// Connected on first use (hosts without docker apps never touch the socket), at the API
    /// version the engine speaks.
    async fn client(&self) -> Result<&Docker, RunnerError> {
        self.client
            .get_or_try_init(|| async {
                let d = Docker::connect_with_local_defaults().map_err(|e| failed(Call::Connect, e))?;
                bounded(Call::Negotiate, d.negotiate_version()).await
            })
            .await
    }

    pub async fn start(
        &self,
        session_id: u32,
        image: &str,
        env: &BTreeMap<String, String>,
        mounts: &[String],
        devices: &[String],
        command: &[String],
    ) -> Result<RunnerHandle, RunnerError> {
        let d = self.client().await?;
        let mut env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("WOLF_SESSION_ID={session_id}"));
        let devices = devices
            .iter()
            .map(|dev| {
                let (host, inside) = dev.split_once(':').unwrap_or((dev, dev));
                DeviceMapping {
                    path_on_host: Some(host.to_owned()),
                    path_in_container: Some(inside.to_owned()),
                    cgroup_permissions: Some("rwm".into()),
                }
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            // Empty: the image's own command.
            cmd: (!command.is_empty()).then(|| command.to_vec()),
            env: Some(env),
            labels: Some(HashMap::from([(LABEL.to_owned(), session_id.to_string())])),
            host_config: Some(HostConfig {
                binds: Some(mounts.to_vec()),
                devices: Some(devices),
                device_cgroup_rules: Some(vec![format!("c {INPUT_MAJOR}:* rmw")]),
                cap_drop: Some(vec!["MKNOD".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("wolf-rs-session-{session_id}-{}", crate::metrics::unix_ms());
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = bounded(Call::Create, d.create_container(Some(options), body)).await?;
        let id = created.id;
        if let Err(e) = bounded(Call::Start, d.start_container(&id, None::<StartContainerOptions>)).await {
            let _ = self.remove(&id).await;
            return Err(e);
        }
        tracing::info!(session = session_id, container = %id, image, "app container started");
        Ok(RunnerHandle::Docker { container_id: id })
    }

    /// Runs, and carries our label for this session?
    pub async fn alive(&self, container_id: &str, session_id: u32) -> Result<bool, RunnerError> {
        let d = self.client().await?;
        match tokio::time::timeout(CALL_TIMEOUT, d.inspect_container(container_id, None::<InspectContainerOptions>))
            .await
        {
            Ok(Ok(c)) => {
                let running = c.state.and_then(|s| s.running).unwrap_or(false);
                let label = c.config.and_then(|c| c.labels).and_then(|l| l.get(LABEL).cloned());
                Ok(running && label.as_deref() == Some(session_id.to_string().as_str()))
            }
            Ok(Err(e)) if not_found(&e) => Ok(false),
            Ok(Err(e)) => Err(failed(Call::Inspect(container_id.to_owned()), e)),
            Err(_) => Err(failed(Call::Inspect(container_id.to_owned()), DockerError::NoAnswer(CALL_TIMEOUT))),
        }
    }

    /// Stop (SIGTERM, then SIGKILL after `timeout`) and remove. A container already gone is fine.
    pub async fn stop(&self, container_id: &str, timeout: Duration) -> Result<(), RunnerError> {
        let d = self.client().await?;
        let secs = timeout.as_secs().clamp(1, 600) as i32;
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        match tokio::time::timeout(CALL_TIMEOUT + timeout, d.stop_container(container_id, Some(options))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if not_found(&e) => return Ok(()),
            // 304: already stopped.
            Ok(Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. })) => {}
            Ok(Err(e)) => tracing::warn!(container = container_id, error = %e, "docker stop failed; removing by force"),
            Err(_) => tracing::warn!(container = container_id, "docker stop timed out; removing by force"),
        }
        self.remove(container_id).await
    }

    async fn remove(&self, container_id: &str) -> Result<(), RunnerError> {
        let d = self.client().await?;
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match tokio::time::timeout(CALL_TIMEOUT, d.remove_container(container_id, Some(options))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if not_found(&e) => Ok(()),
            // 409: removal already in progress.
            Ok(Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. })) => Ok(()),
            Ok(Err(e)) => Err(failed(Call::Remove(container_id.to_owned()), e)),
            Err(_) => Err(failed(Call::Remove(container_id.to_owned()), DockerError::NoAnswer(CALL_TIMEOUT))),
        }
    }

    /// Containers with our label (running or not): (id, session label).
    pub async fn labelled(&self) -> Result<Vec<(String, String)>, RunnerError> {
        let d = self.client().await?;
        let filters = HashMap::from([("label", vec![LABEL])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list = bounded(Call::List, d.list_containers(Some(options))).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let label = c.labels.as_ref().and_then(|l| l.get(LABEL)).cloned()?;
                Some((c.id?, label))
            })
            .collect())
    }
}
