"""The running gateway: wires the pure pipeline, the journal, the broker and the destinations together.

``start()`` opens the journal, loads routes and transformer plugins, connects to RabbitMQ, declares the
topology and starts the consumers; ``stop()`` stops taking new messages, lets the ones in flight finish (each
either acked or left for redelivery, never half-done), and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from gateway.config import Settings
from gateway.delivery.dmp.client import DmpClient
from gateway.delivery.dmp.iti41 import Iti41Options, SigningMaterial
from gateway.delivery.dmp.vihf import VihfSettings
from gateway.delivery.dmp.xds_client import XdsDmpClient
from gateway.delivery.mssante.imap import ImapMailbox
from gateway.delivery.mssante.smtp import SmtpClient
from gateway.delivery.mssante.tls import client_tls_context
from gateway.model import Code
from gateway.routing import RouteTable, load_routes
from gateway.routing.transformers import check_names, load_transformers
from gateway.runtime.bal_reader import BalReader, LpsSettings
from gateway.runtime.business_acks import BusinessAcks
from gateway.runtime.inbound import InboundHandler
from gateway.runtime.journal import Journal, open_journal
from gateway.runtime.official import OfficialStep
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.publisher import Publisher
from gateway.runtime.topology import Topology, declare
from gateway.runtime.worker import DeliveryWorker, Destination

log = logging.getLogger("cisis.service")


class ConfigurationError(RuntimeError):
    pass


_frozen = False


def _freeze_long_lived_objects() -> None:
    """Once per process (tests start many gateways in one): a later freeze would pin their garbage for good."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


@dataclass
class _Consumer:
    queue: AbstractQueue
    tag: str


@dataclass
class GatewayService:
    settings: Settings
    journal: Journal | None = None
    routes: RouteTable | None = None
    destinations: dict[str, Destination] | None = None
    connection: AbstractRobustConnection | None = None
    topology: Topology | None = None
    _consumers: list[_Consumer] = field(default_factory=list)
    _inflight: set[asyncio.Task] = field(default_factory=set)
    _owns_journal: bool = False
    _owns_destinations: bool = False
    _official: OfficialStep | None = None
    bal_reader: BalReader | None = None

    def build_pipeline(self) -> Pipeline:
        s = self.settings
        routes = self.routes or load_routes(s.routes_path)
        self.routes = routes
        transformers = load_transformers(s.transformers_dir)
        missing = check_names(routes.transformer_names(), transformers)
        if missing:
            raise ConfigurationError(f"routes use transformers that are not installed: {', '.join(missing)}")
        return Pipeline(
            routes,
            transformers,
            s.patient_hash_key.get_secret_value(),
            s.max_message_bytes,
            **s.pipeline_options(),
        )

    def _dmp_destination(self) -> Destination:
        s = self.settings
        if s.dmp_transport == "json":
            return DmpClient(s.dmp_url, timeout_s=s.dmp_timeout_s)
        if not (s.dmp_repository_url and s.dmp_registry_url):
            raise ConfigurationError(
                "CISIS_DMP_TRANSPORT=xds needs CISIS_DMP_REPOSITORY_URL and CISIS_DMP_REGISTRY_URL"
            )
        cert_file = s.dmp_signing_cert_file or s.dmp_cert_file
        key_file = s.dmp_signing_key_file or s.dmp_key_file or cert_file
        if cert_file is None or key_file is None:
            raise ConfigurationError(
                "CISIS_DMP_TRANSPORT=xds needs the structure's certificate (CISIS_DMP_CERT_FILE)"
            )
        password = s.dmp_signing_key_password or s.dmp_key_password
        role = None
        if s.vihf_profession_role:
            code, _, system = s.vihf_profession_role.partition("^")
            role = Code(code=code, code_system=system or None)
        options = Iti41Options(
            source_id=s.dmp_source_id,
            repository_url=s.dmp_repository_url,
            registry_url=s.dmp_registry_url,
            vihf=VihfSettings(
                version=s.vihf_version,
                lps_name=s.vihf_lps_name,
                lps_version=s.vihf_lps_version,
                lps_homologation_id=s.vihf_lps_homologation_id,
                secteur_activite=s.vihf_secteur_activite,
                mode=s.vihf_mode,
                profession_role=role,
            ),
            signature_digest=s.dmp_signature_digest,
            signature_algorithm="rsa-sha1" if s.dmp_signature_digest == "sha1" else "rsa-sha256",
        )
        signing = SigningMaterial(
            cert_pem=Path(cert_file).read_bytes(),
            key_pem=Path(key_file).read_bytes(),
            key_password=password.get_secret_value().encode() if password else None,
        )
        tls = client_tls_context(
            ca_file=s.dmp_ca_file,
            cert_file=s.dmp_cert_file,
            key_file=s.dmp_key_file,
            key_password=s.dmp_key_password.get_secret_value() if s.dmp_key_password else None,
        )
        return XdsDmpClient(options, signing, tls=tls, timeout_s=s.dmp_timeout_s)

    def _default_destinations(self) -> dict[str, Destination]:
        s = self.settings
        return {
            "dmp": self._dmp_destination(),
            "mssante": SmtpClient(
                s.smtp_host,
                s.smtp_port,
                sender=s.mss_sender,
                starttls=s.smtp_starttls,
                implicit_tls=s.smtp_implicit_tls,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                timeout_s=s.smtp_timeout_s,
                tls_context=self._smtp_tls_context(),
                pool_size=s.smtp_pool_size,
            ),
        }

    def _smtp_tls_context(self) -> ssl.SSLContext | None:
        """The MSSanté relay's TLS: its CA, and the structure's client certificate when one is configured."""
        s = self.settings
        if not (s.smtp_starttls or s.smtp_implicit_tls):
            return None
        return client_tls_context(
            ca_file=s.smtp_ca_file,
            cert_file=s.smtp_cert_file,
            key_file=s.smtp_key_file,
            key_password=s.smtp_key_password.get_secret_value() if s.smtp_key_password else None,
        )

    def _imap_tls_context(self) -> ssl.SSLContext:
        """The BAL's IMAPS: its own CA/certificate settings, or the SMTP relay's (one operator, usually)."""
        s = self.settings
        password = s.imap_key_password or s.smtp_key_password
        return client_tls_context(
            ca_file=s.imap_ca_file or s.smtp_ca_file,
            cert_file=s.imap_cert_file or s.smtp_cert_file,
            key_file=s.imap_key_file or (s.smtp_key_file if not s.imap_cert_file else None),
            key_password=password.get_secret_value() if password else None,
        )

    def _bal_reader(self, publisher: Publisher) -> BalReader | None:
        s = self.settings
        if not s.imap_host:
            return None
        mailbox = ImapMailbox(
            s.imap_host,
            s.imap_port,
            username=s.imap_username or s.mss_sender,
            password=s.imap_password.get_secret_value() if s.imap_password else "",
            tls_context=self._imap_tls_context(),
            folder=s.imap_folder,
            processed_folder=s.imap_processed_folder,
            mode=s.imap_mode,
            poll_interval_s=s.imap_poll_interval_s,
            timeout_s=s.imap_timeout_s,
        )
        smtp = (self.destinations or {}).get("mssante")
        return BalReader(
            mailbox,
            self.journal,  # type: ignore[arg-type]
            publisher,
            sender=s.mss_sender,
            smtp=smtp if isinstance(smtp, SmtpClient) else None,
            lps=LpsSettings(
                sending_app=s.gateway_application,
                sending_facility=s.gateway_facility,
                receiving_app=s.lps_application,
                receiving_facility=s.lps_facility,
                mail_obx=s.lps_mail_obx,
                replacement_from_cda=s.lps_replacement_from_cda,
            ),
            reconnect_delay_s=min(s.imap_poll_interval_s, 5.0),
        )

    def _tracked(self, handler):
        async def run(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            try:
                await handler(message)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        return run

    async def start(self) -> None:
        s = self.settings
        pipeline = self.build_pipeline()
        if self.journal is None:
            self.journal, self._owns_journal = open_journal(s.journal_url), True
            await self.journal.open()
        if self.destinations is None:
            self.destinations, self._owns_destinations = self._default_destinations(), True
        self.connection = await aio_pika.connect_robust(s.amqp_url)
        publish_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.topology = await declare(publish_channel, s.names, delivery_limit=s.delivery_limit)
        publisher = Publisher(publish_channel, self.topology)

        inbox_channel = await self.connection.channel()
        await inbox_channel.set_qos(prefetch_count=s.prefetch)
        inbox = await inbox_channel.get_queue(s.names.inbox, ensure=False)
        if self.routes is not None and self.routes.wants_official():
            if s.official_kit_dir is None:
                raise ConfigurationError(
                    "a route asks for native+official validation: set CISIS_OFFICIAL_KIT_DIR"
                )
            self._official = OfficialStep(s.official_kit_dir, s.official_cache_dir, s.official_workers)
            self._official.warm()
        handler = InboundHandler(
            pipeline, self.journal, publisher, retry_delay_s=s.retry_delay_s, official=self._official
        )
        self._consumers.append(_Consumer(inbox, await inbox.consume(self._tracked(handler))))

        for name, destination in self.destinations.items():
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=s.delivery_prefetch)
            queue = await channel.get_queue(s.names.outbound_queue(name), ensure=False)
            worker = DeliveryWorker(
                name,
                destination,
                self.journal,
                max_attempts=s.max_attempts,
                retry_delay_s=s.retry_delay_s,
                business_acks=BusinessAcks(publisher, self.journal),
            )
            self._consumers.append(_Consumer(queue, await queue.consume(self._tracked(worker))))
        # Everything loaded so far (routes, JDV, schemas, libraries) lives as long as the process: moved out of
        # the collector's reach, a full collection no longer scans it, which took the event loop's longest stall
        # while sending mails from 17.5 ms to 3.4 ms (bench/mssante_send.py).
        _freeze_long_lived_objects()
        self.bal_reader = self._bal_reader(publisher)
        if self.bal_reader is not None:
            self.bal_reader.start()
        log.info(
            "gateway started prefix=%s routes=%d",
            s.broker_prefix,
            len(self.routes.routes if self.routes else []),
        )

    async def stop(self, timeout_s: float = 30.0) -> None:
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await consumer.queue.cancel(consumer.tag)
        self._consumers.clear()
        if self.bal_reader is not None:
            await self.bal_reader.stop()
            self.bal_reader = None
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout_s)
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        if self._owns_destinations:
            for destination in (self.destinations or {}).values():
                with contextlib.suppress(Exception):
                    await destination.aclose()
            self.destinations = None
        if self._official is not None:
            self._official.close()
            self._official = None
        if self._owns_journal and self.journal is not None:
            await self.journal.close()
            self.journal = None
        log.info("gateway stopped")
