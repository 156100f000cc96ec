"""The clouds' `yandex.cloud.operation` messages and stubs.

One process can hold only one copy of a proto file, and the official Yandex
Cloud SDK (`yandexcloud`) ships these protos as the top-level `yandex`
package. When it is installed, its modules are used (the messages are the
same on the wire), so both packages can be imported together in any order;
otherwise the copies generated here from the repository's proto/ are.
"""

try:
    from yandex.cloud.operation import operation_pb2, operation_service_pb2  # the official SDK's

    OFFICIAL_SDK = True
except ImportError:
    from opsd._yandex import operation_pb2  # noqa: F811 (generated next to this file)
    from opsd._yandex import operation_service_pb2  # noqa: F811

    OFFICIAL_SDK = False

from opsd._yandex import operation_service_pb2_grpc  # noqa: E402

__all__ = ["OFFICIAL_SDK", "operation_pb2", "operation_service_pb2", "operation_service_pb2_grpc"]
