//! 200 requests from 20 client threads with max_workers 4: all correct, and afterwards no
//! leftover processes, mounts or temporary files. Both isolation modes.

use crate::support;
use crate::support::runtime::{leftover_pool_processes, Server, KEY};
use serde_json::{json, Value};

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(d))
        .map(String::from)
        .collect()
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn two_hundred_requests_twenty_clients() {
    let _exclusive = support::exclusive();
    let rootfs = support::runtime::root().to_path_buf();
    // Each isolation mode, with runs forked from the warm pool (the default) and cold.
    for (ns, warm) in [(true, true), (false, true), (true, false), (false, false)] {
        let s = Server::start(
            &format!("max_workers: 4\nmax_requests: 100\nworker_timeout: 20\nnamespaces: {ns}\nwarm_pool: {warm}\n"),
            &[],
        );
        let url = s.url("/v1/sandbox/run");
        let handles: Vec<_> = (0..20u32)
            .map(|t| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let agent = support::runtime::agent();
                    for i in 0..10u32 {
                        let n = t * 1000 + i;
                        let code = format!(
                            "import os, tempfile\nopen(os.path.join(tempfile.gettempdir(), 'f'), 'w').write('{n}')\nprint({n} * 2, os.listdir(tempfile.gettempdir()))\n"
                        );
                        let mut r = agent
                            .post(&url)
                            .header("X-Api-Key", KEY)
                            .send_json(json!({"language": "python3", "code": code}))
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        let v: Value =
                            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                        assert_eq!(
                            v["data"]["stdout"],
                            format!("{} ['f']\n", n * 2),
                            "ns={ns} warm={warm}: {v}"
                        );
                        assert_eq!(v["data"]["error"], "", "ns={ns} warm={warm}: {v}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let log = s.log();
        assert_eq!(log.matches("path=/v1/sandbox/run status=200").count(), 200);
        assert_eq!(s.stop().code(), Some(0));
        let left = leftover_pool_processes();
        assert!(left.is_empty(), "ns={ns} warm={warm}: {left:?}");
        assert!(
            mounts_under(&rootfs).is_empty(),
            "ns={ns}: {:?}",
            mounts_under(&rootfs)
        );
        let tmp: Vec<_> = std::fs::read_dir(rootfs.join("tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "ns={ns}: {tmp:?}");
    }
}
