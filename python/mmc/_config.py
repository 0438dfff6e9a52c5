"""``LocalConfig`` and ``MetaConfig``: Ascend MemCache's configuration objects.

Their attributes carry the original's names. ``DistributedObjectStore.setup(LocalConfig)`` and
``MetaService.setup(MetaConfig)`` turn them into the ``ock.mmc.*`` key=value text that
``mmc-local.conf`` / ``mmc-meta.conf`` files hold, read by the same parser, so a setting means
the same thing in a file and in Python. Attributes left at ``None`` keep MemCache's default.
Attributes of the original that have no counterpart here (config store, HCOM TLS, UBS-IO,
aggregation, memory pool mode, ...) are accepted and ignored; ``ignored()`` lists those set.
"""

_TLS = {
    "tls_enable": "ock.mmc.tls.enable",
    "tls_ca_path": "ock.mmc.tls.ca.path",
    "tls_ca_crl_path": "ock.mmc.tls.crl.path",
    "tls_cert_path": "ock.mmc.tls.cert.path",
    "tls_key_path": "ock.mmc.tls.key.path",
    "tls_key_pass_path": "ock.mmc.tls.key.pass.path",
    "tls_package_path": "ock.mmc.tls.package.path",
    "tls_decrypter_path": "ock.mmc.tls.decrypter.path",
}

_STORE_TLS = [
    "config_store_tls_enable",
    "config_store_tls_ca_path",
    "config_store_tls_ca_crl_path",
    "config_store_tls_cert_path",
    "config_store_tls_key_path",
    "config_store_tls_key_pass_path",
    "config_store_tls_package_path",
    "config_store_tls_decrypter_path",
]


class _OckConfig:
    _KEYS = {}
    _IGNORED = ()

    def __init__(self):
        for name in list(self._KEYS) + list(self._IGNORED):
            object.__setattr__(self, name, None)

    def __setattr__(self, name, value):
        if name not in self._KEYS and name not in self._IGNORED:
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}")
        object.__setattr__(self, name, value)

    def _ock_text(self):
        """The settings as ``ock.mmc.*`` key=value lines (those left at None are omitted)."""
        lines = []
        for name, key in self._KEYS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            lines.append(f"{key} = {value}")
        return "\n".join(lines) + "\n"

    def ignored(self):
        """Names of the settings that are set but have no effect in MemCache."""
        return [n for n in self._IGNORED if getattr(self, n) is not None]

    def str(self):
        return self.__repr__()

    def __repr__(self):
        set_ = {n: getattr(self, n) for n in list(self._KEYS) + list(self._IGNORED)}
        body = ", ".join(f"{n}={v!r}" for n, v in set_.items() if v is not None)
        return f"{type(self).__name__}({body})"


class LocalConfig(_OckConfig):
    """Settings of a client and its embedded local service (``DistributedObjectStore.setup``).

    ``meta_service_url`` (``tcp://ip:port``), ``dram_size`` / ``hbm_size`` (``"1GB"``; a size
    makes ``init`` start a local service inside this process), ``hcom_url`` (this process's data
    endpoint), ``protocol`` (``host_tcp``, ``host_shm``, ``host_rdma``), ``world_size``,
    ``log_level``, ``client_timeout_seconds``, ``read_thread_pool_size``,
    ``write_thread_pool_size``, ``tls_*``.
    """

    _KEYS = {
        "meta_service_url": "ock.mmc.meta_service_url",
        "log_level": "ock.mmc.log_level",
        "world_size": "ock.mmc.local_service.world_size",
        "protocol": "ock.mmc.local_service.protocol",
        "hcom_url": "ock.mmc.local_service.hcom_url",
        "dram_size": "ock.mmc.local_service.dram.size",
        "hbm_size": "ock.mmc.local_service.hbm.size",
        "client_timeout_seconds": "ock.mmc.client.timeout.seconds",
        "read_thread_pool_size": "ock.mmc.client.read_thread_pool.size",
        "write_thread_pool_size": "ock.mmc.client.write_thread_pool.size",
        **_TLS,
    }
    _IGNORED = (
        "config_store_url",
        "max_dram_size",
        "max_hbm_size",
        "client_retry_milliseconds",
        "aggregate_io",
        "aggregate_num",
        "ubs_io_enable",
        "memory_pool_mode",
        *_STORE_TLS,
        "hcom_tls_enable",
        "hcom_tls_ca_path",
        "hcom_tls_ca_crl_path",
        "hcom_tls_cert_path",
        "hcom_tls_key_path",
        "hcom_tls_key_pass_path",
        "hcom_tls_decrypter_path",
    )


class MetaConfig(_OckConfig):
    """Settings of a meta service run by ``MetaService.main()`` (``MetaService.setup``).

    ``meta_service_url`` (where it listens), ``metrics_url`` (HTTP ``/metrics``),
    ``evict_threshold_high`` / ``evict_threshold_low`` (percent), ``log_level``, ``tls_*``.
    """

    _KEYS = {
        "meta_service_url": "ock.mmc.meta_service_url",
        "log_level": "ock.mmc.log_level",
        "metrics_url": "ock.mmc.meta_service.metrics_url",
        "evict_threshold_high": "ock.mmc.evict_threshold_high",
        "evict_threshold_low": "ock.mmc.evict_threshold_low",
        **_TLS,
    }
    _IGNORED = (
        "config_store_url",
        "ha_enable",
        "log_path",
        "log_rotation_file_size",
        "log_rotation_file_count",
        "ubs_io_enable",
        *_STORE_TLS,
    )
