//! Wiring: open the store, load the secrets, build the state and serve until shutdown.

use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tracing::info;

use crate::auth::TokenService;
use crate::config::ServeArgs;
use crate::docs::store::{embedded::EmbeddedDocStore, redis::RedisDocStore, DocStore};
use crate::docs::DocManager;
use crate::media::turn::TurnConfig;
use crate::media::{MediaConfig, MediaHandle};
use crate::rooms::RoomManager;
use crate::state::{AppState, RuntimeConfig};
use crate::store::{embedded::EmbeddedStore, redis::RedisStore, Store};

/// Opens the configured store.
pub async fn open_store(args: &ServeArgs) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &args.redis {
        Some(url) => Arc::new(
            RedisStore::connect(url, &args.redis_prefix)
                .await
                .context("connecting to Redis")?,
        ),
        None => Arc::new(EmbeddedStore::open(&args.data_dir).with_context(|| {
            format!("opening the embedded store in {}", args.data_dir.display())
        })?),
    })
}

/// Opens the shared-document store next to the case store (same backend, same durability).
pub async fn open_doc_store(args: &ServeArgs) -> anyhow::Result<Arc<dyn DocStore>> {
    Ok(match &args.redis {
        Some(url) => Arc::new(
            RedisDocStore::connect(url, &args.redis_prefix)
                .await
                .context("connecting to Redis (documents)")?,
        ),
        None => Arc::new(EmbeddedDocStore::open(&args.data_dir).with_context(|| {
            format!("opening the document store in {}", args.data_dir.display())
        })?),
    })
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let secrets = crate::secrets::load(&args)?;
    let store = open_store(&args).await?;
    let doc_store = open_doc_store(&args).await?;
    let public_url = args.public_url();
    let tokens = TokenService::new(secrets.jwt, &args.issuer, &public_url);
    if args.media_listen.ip().is_unspecified() && args.media_public_ip.is_none() {
        anyhow::bail!(
            "--media-listen {} binds every interface: set --media-public-ip to the address clients reach",
            args.media_listen
        );
    }
    let turn = match (&args.turn_secret, args.turn_url.is_empty()) {
        (Some(secret), false) => Some(TurnConfig {
            urls: args.turn_url.clone(),
            secret: secret.clone(),
            ttl_secs: args.turn_ttl.as_secs() as i64,
        }),
        (None, true) => None,
        _ => anyhow::bail!("--turn-url and --turn-secret go together"),
    };
    let media = MediaHandle::start(MediaConfig {
        listen: args.media_listen,
        public_ip: args.media_public_ip,
        tcp_listen: args.media_tcp_listen,
    })
    .await
    .with_context(|| format!("binding the media socket {}", args.media_listen))?;
    info!(media = %media.advertised, turn = turn.is_some(), "media plane ready");
    let state = AppState {
        rooms: RoomManager::new(store.clone(), media, turn),
        docs: DocManager::new(doc_store, args.doc_snapshot_every),
        tokens: Arc::new(tokens),
        admin_token: secrets.admin_token.clone().into(),
        config: Arc::new(RuntimeConfig {
            public_url: public_url.clone(),
            max_frame_bytes: args.max_frame_bytes,
            rate_limit: args.rate_limit,
            rate_burst: args.rate_burst,
            doc_max_frame_bytes: args.doc_max_frame_bytes,
            doc_rate_limit: args.doc_rate_limit,
            doc_rate_burst: args.doc_rate_burst,
            default_invite_ttl: *args.invite_ttl,
        }),
    };
    // A deep accept backlog: a committee opening a session sends many joins at once, and the
    // default 128 overflows under a burst (dropped SYNs are retried only after a second).
    let socket = if args.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = socket.listen(4096)?;
    let local = listener.local_addr()?;
    info!(listen = %local, store = store.kind(), public_url = %public_url, "yuntiao serving");
    if secrets.generated_admin_token {
        // Printed once, to the operator's terminal, never through the log pipeline.
        println!(
            "Admin token (generated, stored in {}/{}): {}",
            args.data_dir.display(),
            crate::secrets::SECRETS_FILE,
            secrets.admin_token
        );
    }
    println!(
        "yuntiao listening on http://{local} (store: {}, media: udp {})",
        store.kind(),
        state.rooms.media().advertised
    );
    // Small frames (an event, then its ack) must not wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, crate::http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    info!("yuntiao stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
