"""`python -m kiln.stack.bucket --bucket NAME`: create the object-store bucket Kiln writes under, if it is missing.

The chart's MinIO hook Job runs it; the S3 API's URL and keys come from AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, as boto3 reads them. Retries until the store answers (MinIO may still be starting).
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from kiln.errors import InputError, KilnError, ServiceError

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket naming rules, as the chart's schema has them


def ensure_bucket(bucket: str, endpoint_url: str | None = None, wait: float = 120.0) -> str:
    """'created' or 'exists'; ServiceError naming the store when it does not answer within ``wait`` seconds."""
    if not BUCKET.match(bucket):
        raise InputError(f"--bucket '{bucket}': not an S3 bucket name",
                         hint="3 to 63 lower-case letters, digits, dots and dashes, a letter or digit at each end")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    deadline = time.monotonic() + wait
    while True:
        try:
            s3.head_bucket(Bucket=bucket)
            return "exists"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                s3.create_bucket(Bucket=bucket)
                return "created"
            problem = f"{exc.response.get('Error', {}).get('Code')}: {exc}"
        except BotoCoreError as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise ServiceError(f"object store {s3.meta.endpoint_url}: bucket {bucket}: {problem}",
                               hint="check the store is up and the keys in its Secret")
        time.sleep(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint-url", default=None, help="The S3 API's URL (default: AWS_ENDPOINT_URL_S3).")
    parser.add_argument("--wait", type=float, default=120.0, help="Seconds to wait for the store.")
    args = parser.parse_args(argv)
    try:
        print(f"bucket {args.bucket}: {ensure_bucket(args.bucket, args.endpoint_url, args.wait)}")
    except KilnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, InputError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
