//! Benchmark: the policy's own cost, without I/O: classifying the path and
//! judging a container-create body as the docker CLI sends it, with the
//! built-in `conservative` policy. Prints microseconds per evaluation.
//!
//! Run with `cargo bench --bench policy`.

use std::time::Instant;

use cistern::policy::{Policy, Verdict};
use cistern::wire::route::classify;

/// A create body shaped like the docker CLI's for
/// `docker run -e A=1 -v vol:/data -p 127.0.0.1:8080:80 --name x busybox sh -c true`.
const CREATE: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"ExposedPorts":{"80/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["A=1"],"Cmd":["sh","-c","true"],"Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":["vol:/data"],"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}]},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":null,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{}}}"#;

fn main() {
    let policy = Policy::default();
    let method = http::Method::POST;
    let target = "/v1.41/containers/create?name=x";
    // Sanity: the body is accepted, so the figure is that of a full pass.
    let route = classify(&method, target).expect("route");
    assert!(matches!(
        policy.judge_body(&route, CREATE.as_bytes()),
        Verdict::Allow(_)
    ));

    let rounds = 20_000;
    for _ in 0..2_000 {
        let route = classify(&method, target).unwrap();
        let _ = policy.judge_body(&route, CREATE.as_bytes());
    }
    let start = Instant::now();
    for _ in 0..rounds {
        let route = classify(&method, target).unwrap();
        policy.authorize(&route).unwrap();
        policy.inspect_query(&route).unwrap();
        std::hint::black_box(policy.judge_body(&route, CREATE.as_bytes()));
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!(
        "policy evaluation (route + authorize + query + body of a {} byte docker CLI create): {per:.1} us",
        CREATE.len()
    );

    let start = Instant::now();
    for _ in 0..rounds * 10 {
        std::hint::black_box(classify(&method, std::hint::black_box(target)).unwrap());
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / (rounds * 10) as f64;
    println!("route classification alone: {per:.2} us");
}
