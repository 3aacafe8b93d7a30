"""The S3 pieces added for speed and flat memory still give the right answers (behaviour, not
timing), on in-process moto (``mock_aws``). The pure pieces are in tests/unit/test_fast_paths.py."""

from __future__ import annotations


def test_listing_timestamps_are_left_unparsed(tmp_path):
    """The S3 client skips dateutil parsing (nothing reads LastModified); listing still works."""
    from moto import mock_aws

    from pipeline.aws import client, reset_clients
    from pipeline.study.s3source import S3StudySource

    with mock_aws():
        reset_clients()
        try:
            s3 = client("s3")
            s3.create_bucket(Bucket="bkt-listing")
            for name in ("CT/2.dcm", "CT/10.dcm"):
                s3.put_object(Bucket="bkt-listing", Key=f"in/s/{name}", Body=b"x" * 10)
            objects, _ = S3StudySource(s3, "bkt-listing", "in/s/").list()
            assert sorted(o.path for o in objects) == ["CT/10.dcm", "CT/2.dcm"]
            assert isinstance(s3.list_objects_v2(Bucket="bkt-listing")["Contents"][0]["LastModified"], str)
        finally:
            reset_clients()


def test_multipart_sink_cuts_minimum_size_parts_and_keeps_every_byte():
    """Parts of S3's 5 MiB minimum (bounded memory), whatever the sizes written; content intact."""
    import os

    from moto import mock_aws

    from pipeline.aws import client, reset_clients
    from pipeline.outputs.s3 import PART_SIZE, MultipartSink

    with mock_aws():
        reset_clients()
        try:
            s3 = client("s3")
            s3.create_bucket(Bucket="bkt-parts")
            sizes: list[int] = []
            real = s3.upload_part

            def spy(**kwargs):
                sizes.append(len(kwargs["Body"]))
                return real(**kwargs)

            s3.upload_part = spy
            chunks = [os.urandom(n) for n in (100, 3_000_000, 12_000_000, 7, PART_SIZE, 2_500_000)]
            sink = MultipartSink(s3, "bkt-parts", "k.zip")
            for chunk in chunks:
                sink.write(chunk)
            sink.complete()
            assert s3.get_object(Bucket="bkt-parts", Key="k.zip")["Body"].read() == b"".join(chunks)
            assert sizes[:-1] == [PART_SIZE] * (len(sizes) - 1) and 0 < sizes[-1] <= PART_SIZE
            assert sum(sizes) == sum(map(len, chunks))
        finally:
            reset_clients()
