"""Print a new API token for a user (created without a password if missing); the token is the last line."""

from django.core.management.base import BaseCommand

from imagegen import services


class Command(BaseCommand):
    help = "Create an API token for USERNAME (creating the user if missing) and print it as the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell tokens apart in the admin.")

    def handle(self, *args, username: str, name: str, **options) -> None:
        token = services.api_token_create(username=username, name=name)
        self.stderr.write(f"API token for {username} (shown once; send it as 'Authorization: Bearer <token>'):")
        self.stdout.write(token)
