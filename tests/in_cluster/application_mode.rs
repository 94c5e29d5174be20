//! An application-mode Flink pipeline on the node.

use super::*;

/// An application-mode Flink pipeline: the operator starts a JobManager and
/// a TaskManager from the testbed's Flink image on the node, and the job is
/// snapshotted, upgraded from its savepoint, suspended and resumed through
/// the JobManager Service, as in session mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_application_mode_job_runs_on_the_node_and_upgrades_from_its_savepoint() {
    use common::flink::{
        completed_savepoint, on_disk, redeployed, running, upgraded_to_parallelism, FlinkRest,
        JOB_STARTS_WITHIN,
    };
    use common::objects::{kcs, valid_kcs_spec};
    use common::{status, wait_for_ready};

    let testbed = Testbed::with_node();
    deploy_operator(testbed);
    let client = testbed.client().await;
    let ns = testbed.namespace("application").await;
    create(&client, &ns, kcs(valid_kcs_spec()))
        .await
        .expect("set created");
    // Savepoints and checkpoints go to a host folder the pods mount through
    // a claim (a hostPath volume of their own would break the restricted
    // Pod Security Standard, which e2e/checks/restricted-pods enforces).
    let state = testbed.state.join("flink-application");
    common::node::host_folder_claim(testbed, &ns, "flink-state", &state);
    let on_host = |location: &str| {
        let inside = on_disk(location)
            .strip_prefix("/flink-state")
            .expect("under /flink-state");
        state.join(inside)
    };
    let flink = json!({
        "mode": "application",
        "image": "kappa-flink:2.3.0",
        "jarUri": "local:///opt/flink/usrlib/keyed-count.jar",
        "args": ["50"],
        "taskManager": {"replicas": 1, "taskSlots": 2},
        "flinkConfiguration": {
            "state.savepoints.dir": "file:///flink-state/savepoints",
            "state.checkpoints.dir": "file:///flink-state/checkpoints",
            "execution.checkpointing.interval": "5s",
        },
        "podTemplate": {"spec": {
            "containers": [{"name": "flink-main-container", "imagePullPolicy": "Never",
                            "volumeMounts": [{"name": "state", "mountPath": "/flink-state"}]}],
            "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": "flink-state"}}]
        }}
    });
    let spec = json!({
        "clusterSet": "events",
        "inputs": [{"stream": "orders"}],
        "outputs": [{"stream": "totals"}],
        "engine": {"type": "flink", "flink": flink},
    });
    create(&client, &ns, pipeline("job", spec))
        .await
        .expect("pipeline");
    let first = running(&client, &ns, "job").await;
    let rest = status(&client, &ns, "Pipeline", "job").await["job"]["restUrl"]
        .as_str()
        .expect("the JobManager Service's URL")
        .to_string();
    let flink = FlinkRest { url: rest };
    assert_eq!(
        flink.job_state(&first).await,
        "RUNNING",
        "Flink runs {first}"
    );
    let components = testbed.jsonpath(
        &ns,
        &["pods", "-l", "kappa.dev/pipeline=job"],
        "{.items[*].metadata.labels.kappa\\.dev/component}",
    );
    assert!(
        components.contains("jobmanager") && components.contains("taskmanager"),
        "{components}"
    );

    // A Savepoint resource, written through the JobManager Service.
    let snapshot = completed_savepoint(&client, &ns, "first", "job").await;
    let location = snapshot["location"]
        .as_str()
        .expect("a location")
        .to_string();
    assert!(on_host(&location).join("_metadata").is_file(), "{location}");

    // A parallelism change: the JobManager is started again with
    // --fromSavepoint, and Flink says the new job was restored from it.
    let second = upgraded_to_parallelism(&client, &ns, "job", &first, 2).await;
    let (path, is_savepoint) = flink.restored_from(&second).await;
    println!("application job upgraded {first} -> {second} from {path:?}");
    let recorded = status(&client, &ns, "Pipeline", "job").await["restoredFrom"].clone();
    assert_eq!(Some(json!(path.clone())), Some(recorded));
    assert_eq!(is_savepoint, Some(true));
    assert!(on_host(path.as_deref().expect("a path"))
        .join("_metadata")
        .is_file());
    assert_eq!(
        flink.get(&format!("/jobs/{second}")).await["vertices"][0]["parallelism"],
        2
    );
    let args = testbed.jsonpath(
        &ns,
        &["deployment", "job-jobmanager"],
        "{.spec.template.spec.containers[0].args}",
    );
    assert!(
        args.contains(&second) && args.contains("--fromSavepoint"),
        "{args}"
    );

    // Suspended: no TaskManager, the JobManager kept; resumed from the savepoint.
    patch_spec(&client, &ns, "job", json!({"state": "suspended"})).await;
    wait_for_ready(&client, &ns, "Pipeline", "job", JOB_STARTS_WITHIN, |c| {
        c.reason == "Suspended"
    })
    .await;
    let task_managers =
        testbed.jsonpath(&ns, &["deployment", "job-taskmanager"], "{.spec.replicas}");
    assert_eq!(task_managers, "0");
    assert_eq!(flink.job_state(&second).await, "FINISHED");
    let kept = status(&client, &ns, "Pipeline", "job").await["transition"]["restoreFrom"].clone();
    patch_spec(&client, &ns, "job", json!({"state": "running"})).await;
    let third = redeployed(&client, &ns, "job", &second, "Resumed").await;
    let (path, _) = flink.restored_from(&third).await;
    assert_eq!(
        Some(json!(path)),
        Some(kept),
        "resumed from the suspension's savepoint"
    );

    // Deleting the pipeline takes its Flink cluster with it.
    kappa_api(&client, &ns, "Pipeline")
        .delete("job", &Default::default())
        .await
        .expect("pipeline deleted");
    let started = Instant::now();
    loop {
        let left = testbed.kubectl(&[
            "-n",
            &ns,
            "get",
            "deployments,services,configmaps",
            "-l",
            "kappa.dev/pipeline=job",
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "left behind: {left}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_pods_logged_no_refusal(testbed);
}
