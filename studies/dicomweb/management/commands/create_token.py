"""python manage.py create_token --user NAME [--name LABEL]"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from studies.dicomweb.tokens import create_token


class Command(BaseCommand):
    help = ("Print a new personal API token for a user (stored hashed, revocable on the user's API tokens page). "
            "Scripts send it as 'Authorization: Bearer TOKEN'.")

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="user name")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, *args, user, name, **options):
        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"no user {user!r}")
        if not account.is_active:
            raise CommandError(f"user {user!r} is inactive")
        _, token = create_token(account, name)
        self.stdout.write(token)
