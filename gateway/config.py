"""Configuration: environment variables prefixed ``CISIS_`` (or a ``.env`` file), overridable by CLI options.

Every setting has a default that runs the local demo; the README's configuration reference lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development key for patient hashes. A deployment must set CISIS_PATIENT_HASH_KEY: with this key anyone
#: can recompute the hash of a known INS.
DEV_PATIENT_HASH_KEY = "cisis-gateway-dev-key-change-me"


@dataclass(frozen=True, slots=True)
class BrokerNames:
    """Exchange and queue names, all derived from one prefix so that several gateways (or test runs) can share
    a broker without seeing each other's messages."""

    prefix: str

    @property
    def inbound_exchange(self) -> str:
        return f"{self.prefix}.inbound"

    @property
    def inbox(self) -> str:
        return f"{self.prefix}.inbox"

    @property
    def outbound_exchange(self) -> str:
        return f"{self.prefix}.outbound"

    def outbound_queue(self, destination: str) -> str:
        return f"{self.prefix}.out.{destination}"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def ack_queue(self) -> str:
        return f"{self.prefix}.acks"

    @property
    def lps_queue(self) -> str:
        """Where the reverse flow puts the MDM built from mails received in the BAL applicative (for the DPI)."""
        return f"{self.prefix}.lps"

    #: routing key of the inbox binding: `cisis-gateway send` and any producer publish with it.
    inbox_routing_key: str = "inbox"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CISIS_", env_file=".env", extra="ignore")

    # Broker
    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL (amqps:// for TLS)."
    )
    broker_prefix: str = Field("cisis", description="Prefix of every exchange and queue name.")
    prefetch: int = Field(32, ge=1, description="Unacked inbox messages processed concurrently.")
    delivery_prefetch: int = Field(8, ge=1, description="Unacked jobs per destination worker.")
    delivery_limit: int = Field(20, ge=2, description="Quorum-queue delivery limit: poison-message backstop.")
    max_attempts: int = Field(5, ge=1, description="Delivery attempts before a job is dead-lettered.")
    retry_delay_s: float = Field(2.0, ge=0, description="Wait before a failed delivery is retried.")

    # Inputs
    max_message_bytes: int = Field(16 * 1024 * 1024, description="Larger inbound messages are rejected.")
    routes_path: Path = Field(Path("routes.yaml"), description="The routing rules file.")
    ins_production: bool = Field(False, description="Refuse test and demo INS (OIDs .4.10 / .4.11).")
    terminology_path: Path | None = Field(None, description="A rebuilt JDV file (default: the shipped one).")
    official_kit_dir: Path | None = Field(
        None,
        description="The ANS TestContenuCDA kit (schematrons/, jeuxDeValeurs/) for native+official routes.",
    )
    official_cache_dir: Path = Field(Path("var/schematron-cache"), description="Compiled schematrons.")
    official_workers: int = Field(1, ge=1, description="Processes running the official schematrons.")
    transformers_dir: Path | None = Field(Path("transformers"), description="Folder of transformer plugins.")

    # Journal
    journal_url: str = Field("sqlite:///var/journal.db", description="sqlite:///path or postgresql://...")
    patient_hash_key: SecretStr = Field(
        SecretStr(DEV_PATIENT_HASH_KEY), description="HMAC key for patient search."
    )

    # DMP
    dmp_url: str = Field(
        "http://127.0.0.1:8088/dmp/submissions", description="DMP endpoint (demo: the sandbox)."
    )
    dmp_timeout_s: float = Field(15.0, gt=0)
    dmp_transport: Literal["json", "xds"] = Field(
        "json",
        description="json: the demo sandbox's JSON POST; xds: IHE XDS.b TD2.1 (ITI-41/18/57) with VIHF.",
    )
    dmp_repository_url: str | None = Field(None, description="xds: ITI-41 endpoint (repository).")
    dmp_registry_url: str | None = Field(None, description="xds: ITI-18 / ITI-57 endpoint (registry).")
    dmp_source_id: str = Field(
        "1.2.250.1.999.1.1", description="xds: XDSSubmissionSet.sourceId, this gateway's OID (set it)."
    )
    dmp_ca_file: Path | None = Field(None, description="xds: CA bundle of the DMP's TLS certificate.")
    dmp_cert_file: Path | None = Field(None, description="xds: the structure's TLS client certificate (PEM).")
    dmp_key_file: Path | None = Field(None, description="xds: its private key (PEM).")
    dmp_key_password: SecretStr | None = None
    dmp_signing_cert_file: Path | None = Field(
        None, description="xds: seal certificate signing VIHF and submission sets (default: the TLS one)."
    )
    dmp_signing_key_file: Path | None = Field(None, description="xds: its key (default: the TLS key).")
    dmp_signing_key_password: SecretStr | None = None
    dmp_signature_digest: Literal["sha256", "sha1"] = Field(
        "sha256", description="xds: digests of the submission-set signature (sha1 only if the DMP asks)."
    )
    vihf_version: Literal["3.0", "4.0"] = Field("3.0", description="VIHF_Version (sources disagree).")
    vihf_lps_name: str = "cisis-gateway"
    vihf_lps_version: str = "0.1"
    vihf_lps_homologation_id: str = Field("", description="LPS_ID_HOMOLOGATION_DMP given by the DMP.")
    vihf_secteur_activite: str = Field("SA01", description="Secteur_Activite (JDV J61) of the structure.")
    vihf_mode: Literal["personne", "automate"] = "personne"
    vihf_profession_role: str | None = Field(
        None, description="code^codeSystem of the 1st VIHF role when the sender's specialty gives none."
    )

    # MSSanté
    smtp_host: str = Field("127.0.0.1", description="SMTP relay of the MSSanté operator.")
    smtp_port: int = 2525
    smtp_starttls: bool = Field(False, description="Upgrade the connection with STARTTLS.")
    smtp_implicit_tls: bool = Field(False, description="TLS from the first byte (port 465 style).")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(30.0, gt=0)
    mss_sender: str = Field(
        "gateway@demo.mssante.fr", description="The BAL applicative (From of every mail)."
    )
    smtp_ca_file: Path | None = Field(None, description="CA bundle that signs the relay's certificate.")
    smtp_cert_file: Path | None = Field(None, description="The structure's client certificate (PEM).")
    smtp_key_file: Path | None = Field(None, description="Its private key (PEM).")
    smtp_key_password: SecretStr | None = Field(None, description="Passphrase of the private key.")
    smtp_pool_size: int = Field(2, ge=1, description="SMTP connections kept open to the relay.")

    # The BAL applicative read back over IMAP (receipts -> ZAM Z02/Z03; XDM mails -> MDM for the DPI)
    imap_host: str | None = Field(None, description="IMAPS server of the BAL applicative (unset: not read).")
    imap_port: int = 993
    imap_username: str | None = Field(None, description="Login of the BAL (default: CISIS_MSS_SENDER).")
    imap_password: SecretStr | None = None
    imap_folder: str = "INBOX"
    imap_processed_folder: str | None = Field(
        None, description="Handled mails are moved there (unset: deleted once journaled)."
    )
    imap_mode: Literal["idle", "poll"] = Field("idle", description="IMAP IDLE push, or polling.")
    imap_poll_interval_s: float = Field(30.0, gt=0, description="Poll period (and IDLE's upper bound).")
    imap_timeout_s: float = Field(30.0, gt=0)
    imap_ca_file: Path | None = Field(None, description="CA bundle of the IMAP server (default: SMTP's).")
    imap_cert_file: Path | None = Field(None, description="Client certificate (default: SMTP's).")
    imap_key_file: Path | None = Field(None, description="Its private key (default: SMTP's).")
    imap_key_password: SecretStr | None = Field(None, description="Passphrase (default: SMTP's).")
    lps_application: str = Field("DPI", description="MSH-5 of the MDM sent to the DPI (reverse flow).")
    lps_facility: str = Field("", description="MSH-6 of the MDM sent to the DPI.")
    gateway_application: str = Field("CISIS-GATEWAY", description="MSH-3 of what the gateway originates.")
    gateway_facility: str = Field("", description="MSH-4 of what the gateway originates.")
    lps_replacement_from_cda: bool = Field(
        False,
        description="Without an XDM action slot, read a CDA with relatedDocument RPLC as a replacement (T10).",
    )
    lps_mail_obx: Literal["body", "rfc822"] = Field(
        "body", description="The mail OBX of the reverse MDM: the mail's text body (ANS example) or the mail."
    )

    # Demo services (make run)
    demo_smtp_port: int = 2525
    demo_dmp_port: int = 8088
    demo_dir: Path = Field(Path("var/demo"), description="Where the demo mailbox and DMP sandbox write.")

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _attempts_below_delivery_limit(self) -> Settings:
        # The worker dead-letters (and journals) after max_attempts; the broker's delivery limit is only the
        # backstop for a consumer that crashes. If the broker's limit came first, the journal would never learn.
        if self.delivery_limit <= self.max_attempts:
            raise ValueError("CISIS_DELIVERY_LIMIT must be greater than CISIS_MAX_ATTEMPTS")
        return self

    def pipeline_options(self) -> dict:
        """Keyword arguments for :class:`gateway.runtime.pipeline.Pipeline` taken from the settings."""
        from gateway.terminology import Terminology

        terminology = Terminology.load(self.terminology_path) if self.terminology_path else None
        return {"terminology": terminology, "ins_production": self.ins_production}

    @property
    def names(self) -> BrokerNames:
        return BrokerNames(self.broker_prefix)
