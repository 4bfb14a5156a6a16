from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("", include("studies.dicomweb.urls")),
    path("", include("studies.review.urls")),
    path("", include("studies.urls")),
    path("", include("analysis.urls")),
]
