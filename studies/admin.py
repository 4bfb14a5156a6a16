from django.contrib import admin

from .pacs.forms import PacsConnectionAdminForm

from .models import (
    AccessLog,
    Cohort,
    CohortMember,
    Exam,
    ExclusionFlag,
    Job,
    Membership,
    PacsConnection,
    Patient,
    Project,
    QCTResult,
    StoredSeries,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "osteoporosis_below", "normal_above", "created_at"]
    inlines = [MembershipInline]


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["pseudonym", "project", "sex", "birth_year"]
    list_filter = ["project"]
    search_fields = ["pseudonym"]


@admin.register(Exam)
class ExamAdmin(admin.ModelAdmin):
    list_display = ["patient", "exam_date", "region", "contrast"]
    list_select_related = ["patient"]
    raw_id_fields = ["patient"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["pk", "kind", "project", "state", "created_at", "finished_at"]
    list_filter = ["state", "kind"]


@admin.register(AccessLog)
class AccessLogAdmin(admin.ModelAdmin):
    """Read-only, superusers included: the access log is append-only (the model refuses changes too)."""

    list_display = ["at", "who", "project", "action", "detail"]
    list_filter = ["action"]
    search_fields = ["username"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register([QCTResult, ExclusionFlag, Cohort, CohortMember])


@admin.register(PacsConnection)
class PacsConnectionAdmin(admin.ModelAdmin):
    """The secret is write-only: set it on the PACS connection page, never shown or edited here."""

    list_display = ["name", "base_url", "auth"]
    form = PacsConnectionAdminForm


@admin.register(StoredSeries)
class StoredSeriesAdmin(admin.ModelAdmin):
    list_display = ["series_uid", "project", "exam", "n_slices", "created_at"]
    list_filter = ["project"]
    raw_id_fields = ["exam"]
    readonly_fields = ["volume", "geometry", "meta", "flags"]
